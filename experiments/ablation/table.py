"""Gather the ablation's runs into one table: mean ± standard deviation over seeds per variant.

Values come from each run's eval/test.json (the text+mask mode) and train.json; a variant whose runs
have not all finished shows how many seeds did ("1/2"), and one with none shows dashes.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from experiments.ablation.study import MODE, SPLIT, TRAIN_RECORD, StudySettings, is_evaluated
from experiments.ablation.variants import PAPER, PAPER_COLUMNS, VARIANTS

METRICS = (  # key, Markdown header, format
    ("fid", "FID ↓", "{:.2f}"),
    ("kid", "KID ↓", "{:.4f}"),
    ("clip_score", "CLIP score ↑", "{:.2f}"),
    ("mask_miou", "Mask mIoU ↑", "{:.3f}"),
    ("pixel_acc", "Pixel acc ↑", "{:.3f}"),
    ("train_minutes", "Train (min)", "{:.1f}"),
)


@dataclass
class VariantResult:
    variant: str
    seeds: list[int]  # the finished ones
    values: dict[str, list[float]]  # metric -> one value per finished seed

    def mean_std(self, key: str) -> tuple[float, float | None]:
        """(mean, sample std or None with fewer than two seeds); nan without values."""
        values = [v for v in self.values[key] if not math.isnan(v)]
        if not values:
            return math.nan, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def read_results(settings: StudySettings) -> list[VariantResult]:
    results = []
    for variant in settings.variants:
        result = VariantResult(variant, [], {key: [] for key, _, _ in METRICS})
        for seed in settings.seeds:
            run_dir = settings.run_dir(variant, seed)
            if not (is_evaluated(run_dir, settings) and (run_dir / TRAIN_RECORD).is_file()):
                continue
            values = json.loads((run_dir / "eval" / f"{SPLIT}.json").read_text())[MODE]
            values["train_minutes"] = json.loads((run_dir / TRAIN_RECORD).read_text())["train_seconds"] / 60
            result.seeds.append(seed)
            for key, _, _ in METRICS:
                value = values.get(key)
                result.values[key].append(math.nan if value is None else float(value))
        results.append(result)
    return results


def _cell(result: VariantResult, key: str, fmt: str) -> str:
    mean, std = result.mean_std(key)
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) + ("" if std is None else " ± " + fmt.format(std))


def markdown(results: list[VariantResult], settings: StudySettings, command: str) -> str:
    seeds = len(settings.seeds)
    lines = [
        "# Expert and gate ablation",
        "",
        f"Made by `{command}`: each variant an ordinary training run from `{settings.config}`, evaluated on "
        f"the {SPLIT} split ({'all' if settings.n is None else settings.n} faces, {MODE}), seeds "
        f"{', '.join(map(str, settings.seeds))}: the mean, ± the sample standard deviation over seeds "
        "where more than one has finished.",
        "",
        "| Variant | Description | Seeds | " + " | ".join(h for _, h, _ in METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(METRICS),
    ]
    for r in results:
        cells = [_cell(r, key, fmt) for key, _, fmt in METRICS]
        lines.append(
            f"| {r.variant} | {VARIANTS[r.variant].description} | {len(r.seeds)}/{seeds} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "## For reference: the paper's numbers (not ours)",
        "",
        "Face-MoGLE (arXiv 2509.00428) Tables 3–5, as published: FLUX.1-dev on MM-CelebA-HQ, FID / KID / "
        "Mask / Text in the paper's own units. Another model, data set and evaluators than the table above: "
        "compare the order of the variants, not the values.",
        "",
        "| Variant | Paper's name | " + " | ".join(PAPER_COLUMNS) + " |",
        "|---|---|" + "---:|" * len(PAPER_COLUMNS),
    ]
    for name in settings.variants:
        if name in PAPER:
            paper_name, values = PAPER[name]
            lines.append(f"| {name} | {paper_name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(results: list[VariantResult]) -> tuple[list[str], list[list]]:
    """Header and rows: variant, seeds, then each metric's mean and std (empty with one seed)."""
    header = ["variant", "seeds"] + [f"{key}_{stat}" for key, _, _ in METRICS for stat in ("mean", "std")]
    rows = []
    for r in results:
        row = [r.variant, len(r.seeds)]
        for key, _, _ in METRICS:
            mean, std = r.mean_std(key)
            row += [None if math.isnan(mean) else mean, std]
        rows.append(row)
    return header, rows


def write_csv(results: list[VariantResult], path: Path) -> None:
    header, rows = csv_rows(results)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
