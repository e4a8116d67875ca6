"""The guidance sweep's report: the default it chooses, the surfaces as tables, heat maps and CSV.

`choose` picks the default: among the points with text+mask mIoU >= min_miou and a CLIP score >=
min_clip_ratio x the text-only one at the same text scale, the lowest FID; with none, it names the point
closest to meeting both (the largest smaller ratio of value to threshold).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from experiments.ablation.plots import heatmap, side_by_side, stacked
from experiments.ablation.sweep import Point, PointResult, SweepSettings


@dataclass
class Choice:
    chosen: PointResult | None  # the feasible point with the lowest FID; None when no point is feasible
    closest: PointResult | None  # with none feasible: the point nearest to meeting both thresholds
    feasible: list[PointResult]
    # with none feasible: the lowest FID among the points that keep the mask (a CLIP ratio flatters a text scale
    # whose text-only score is itself low, so the closest point can be a poor image)
    mask_kept: PointResult | None = None


def value(result: PointResult, key: str) -> float:
    """A metric of a point (an attribute's accuracy as `hair_color_acc`); nan where it was not measured."""
    if key.endswith("_acc") and key != "pixel_acc":
        found = ((result.attributes or {}).get(key.removesuffix("_acc")) or {}).get("accuracy")
    else:
        found = result.metrics.get(key)
    return math.nan if found is None else float(found)


def clip_ratio(result: PointResult, results: list[PointResult]) -> float:
    """The point's CLIP score over the text-only mode's at the same text scale."""
    text_only = [r for r in results if r.point == Point(result.point.text_scale, None)]
    if not text_only:
        return math.nan
    base = value(text_only[0], "clip_score")
    return value(result, "clip_score") / base if base > 0 else math.nan


def choose(results: list[PointResult], settings: SweepSettings) -> Choice:
    grid = [r for r in results if r.point.mask_scale is not None]

    def margins(r: PointResult) -> tuple[float, float]:
        return value(r, "mask_miou") / settings.min_miou, clip_ratio(r, results) / settings.min_clip_ratio

    feasible = [r for r in grid if all(m >= 1 for m in margins(r))]
    if feasible:
        return Choice(min(feasible, key=lambda r: value(r, "fid")), None, feasible)
    scored = [r for r in grid if not any(math.isnan(m) for m in margins(r))]
    kept = [r for r in grid if margins(r)[0] >= 1 and not math.isnan(value(r, "fid"))]
    return Choice(
        None,
        max(scored, key=lambda r: min(margins(r)), default=None),
        [],
        min(kept, key=lambda r: value(r, "fid"), default=None),
    )


TABLES = (  # key, title, format, higher is better
    ("mask_miou", "Mask mIoU ↑", "{:.3f}", True),
    ("clip_score", "CLIP score ↑", "{:.2f}", True),
    ("fid", "FID ↓", "{:.2f}", False),
    ("hair_color_acc", "Hair colour accuracy ↑", "{:.2f}", True),
    ("lipstick_acc", "Lipstick accuracy ↑", "{:.2f}", True),
)


def _grid(results: list[PointResult], settings: SweepSettings, key: str) -> list[list[float]]:
    """Rows: text scales; columns: mask scales, then the text-only mode."""
    found = {r.point: value(r, key) for r in results}
    columns = [*settings.mask_scales, None]
    return [[found.get(Point(t, m), math.nan) for m in columns] for t in settings.text_scales]


def _describe(result: PointResult, results: list[PointResult]) -> str:
    p = result.point
    return (
        f"text scale {p.text_scale:g}, mask scale {p.mask_scale:g}: mask mIoU {value(result, 'mask_miou'):.3f}, "
        f"CLIP score {value(result, 'clip_score'):.2f} ({clip_ratio(result, results):.4f} of text-only), "
        f"FID {value(result, 'fid'):.2f}, hair colour accuracy {value(result, 'hair_color_acc'):.2f}"
    )


def choice_text(results: list[PointResult], settings: SweepSettings) -> str:
    choice = choose(results, settings)
    rule = (
        f"text+mask mask mIoU >= {settings.min_miou} and a CLIP score >= {settings.min_clip_ratio} x the "
        "text-only one at the same text scale"
    )
    if choice.chosen is not None:
        return (
            f"{len(choice.feasible)} of the grid's points meet {rule}; the one with the lowest FID: "
            f"{_describe(choice.chosen, results)}."
        )
    if choice.closest is None:
        return f"No point of the grid has both a mask mIoU and a CLIP score relative to text-only, so none can be held to {rule}."
    text = f"No point of the grid meets {rule}. The closest: {_describe(choice.closest, results)}."
    if choice.mask_kept is not None and choice.mask_kept is not choice.closest:
        text += (
            f" Among the points with mask mIoU >= {settings.min_miou}, the lowest FID: "
            f"{_describe(choice.mask_kept, results)}."
        )
    return text


def markdown(results: list[PointResult], settings: SweepSettings) -> str:
    faces = "all" if settings.n is None else settings.n
    lines = [
        f"Run `{settings.run}`, {faces} test faces a point; rows: the text scale, columns: the mask scale, "
        "and the text-only mode (no mask) at that text scale.",
        "",
    ]
    columns = [f"mask {m:g}" for m in settings.mask_scales] + ["text only"]
    for key, title, fmt, _ in TABLES:
        grid = _grid(results, settings, key)
        lines += [f"**{title}**", "", "| text scale | " + " | ".join(columns) + " |"]
        lines.append("|---:|" + "---:|" * len(columns))
        for t, row in zip(settings.text_scales, grid, strict=True):
            cells = ["–" if math.isnan(v) else fmt.format(v) for v in row]
            lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines + [choice_text(results, settings), ""])


def figure(results: list[PointResult], settings: SweepSettings) -> Image.Image:
    """The surfaces as heat maps over (text scale, mask scale): mIoU, the CLIP score relative to text-only,
    FID and hair colour accuracy; the chosen point (or, with none, the closest) framed."""
    choice = choose(results, settings)
    picked = choice.chosen or choice.closest
    marked = None
    if picked is not None:
        marked = (
            settings.text_scales.index(picked.point.text_scale),
            settings.mask_scales.index(picked.point.mask_scale),
        )
    rows = [f"text {t:g}" for t in settings.text_scales]
    columns = [f"mask {m:g}" for m in settings.mask_scales]
    by_point = {r.point: r for r in results}

    def surface(measure) -> list[list[float]]:
        return [
            [
                measure(by_point[Point(t, m)]) if Point(t, m) in by_point else math.nan
                for m in settings.mask_scales
            ]
            for t in settings.text_scales
        ]

    panels = [
        heatmap(surface(lambda r: value(r, "mask_miou")), rows, columns, "mask mIoU", "{:.3f}", True, marked),
        heatmap(
            surface(lambda r: clip_ratio(r, results)),
            rows,
            columns,
            "CLIP / text-only",
            "{:.3f}",
            True,
            marked,
        ),
        heatmap(surface(lambda r: value(r, "fid")), rows, columns, "FID", "{:.2f}", False, marked),
        heatmap(
            surface(lambda r: value(r, "hair_color_acc")),
            rows,
            columns,
            "hair colour acc",
            "{:.2f}",
            True,
            marked,
        ),
    ]
    return stacked([side_by_side(panels[:2]), side_by_side(panels[2:])])


def write_csv(results: list[PointResult], path: Path) -> None:
    keys = [key for key, *_ in TABLES]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text_scale", "mask_scale", "mode", *keys, "clip_ratio"])
        for r in results:
            mask = "" if r.point.mask_scale is None else r.point.mask_scale
            row = [value(r, k) for k in keys] + [clip_ratio(r, results)]
            writer.writerow(
                [r.point.text_scale, mask, r.point.mode, *("" if math.isnan(v) else repr(v) for v in row)]
            )
