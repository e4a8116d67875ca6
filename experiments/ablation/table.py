"""Gather the ablation's runs into rows: per variant (and reference row) and seed, the evaluation's metrics,
the attribute accuracy and the training time; then the mean with its 95 % interval over seeds and the
seed-paired difference from the full model (experiments.ablation.stats).

Values come from each run's eval/test.json, probe.json and train.json; a run that has not finished is left
out, so a row says how many seeds it holds ("1/3").
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from experiments.ablation.probe import PROBE
from experiments.ablation.stats import Interval, mean_interval, paired_difference
from experiments.ablation.study import MODE, SPLIT, TRAIN_RECORD, StudySettings, is_finished
from experiments.ablation.variants import REFERENCES, VARIANTS

METRICS = (  # key, Markdown header, format
    ("mask_miou", "Mask mIoU ↑", "{:.3f}"),
    ("fid", "FID ↓", "{:.2f}"),
    ("clip_score", "CLIP score ↑", "{:.2f}"),
    ("kid", "KID ↓", "{:.4f}"),
    ("pixel_acc", "Pixel acc ↑", "{:.3f}"),
    ("hair_color_acc", "Hair colour acc ↑", "{:.2f}"),
    ("lipstick_acc", "Lipstick acc ↑", "{:.2f}"),
    ("train_minutes", "Train (min)", "{:.1f}"),
)
FORMATS = {key: fmt for key, _, fmt in METRICS}
HEADERS = {key: header for key, header, _ in METRICS}
DIFFERENCES = ("mask_miou", "fid", "clip_score", "hair_color_acc")  # compared with full, seed by seed
REFERENCE = "full"


@dataclass
class Row:
    name: str
    description: str
    values: dict[str, dict[int, float]]  # metric -> seed -> value, for the finished seeds

    @property
    def seeds(self) -> list[int]:
        return sorted({s for by_seed in self.values.values() for s in by_seed})

    def interval(self, key: str) -> Interval:
        return mean_interval(list(self.values.get(key, {}).values()))

    def difference(self, key: str, reference: Row) -> Interval:
        return paired_difference(self.values.get(key, {}), reference.values.get(key, {}))


def run_values(run_dir: Path, mode: str, trained: bool) -> dict[str, float]:
    """One run's values in one mode: the evaluation's metrics, attribute accuracy (nan without a probe or a
    parser), and with `trained` its training minutes."""
    report = json.loads((run_dir / "eval" / f"{SPLIT}.json").read_text())[mode]
    values = {key: _number(report.get(key)) for key in ("mask_miou", "fid", "clip_score", "kid", "pixel_acc")}
    probe = json.loads((run_dir / PROBE).read_text()) if (run_dir / PROBE).is_file() else {}
    attributes = (probe.get("modes", {}).get(mode) or {}).get("attributes") or {}
    for name in ("hair_color", "lipstick"):
        values[f"{name}_acc"] = _number((attributes.get(name) or {}).get("accuracy"))
    seconds = json.loads((run_dir / TRAIN_RECORD).read_text())["train_seconds"] if trained else math.nan
    values["train_minutes"] = seconds / 60
    return values


def _number(value) -> float:
    return math.nan if value is None else float(value)


def read_rows(settings: StudySettings) -> list[Row]:
    """The study's variants, then the reference rows whose source variant is in it."""
    sources = [(name, VARIANTS[name].description, name, MODE, True) for name in settings.variants]
    sources += [
        (r.name, r.description, r.source, r.mode, False)
        for r in REFERENCES.values()
        if r.source in settings.variants
    ]
    rows = []
    for name, description, variant, mode, trained in sources:
        row = Row(name, description, {key: {} for key, _, _ in METRICS})
        for seed in settings.seeds:
            run_dir = settings.run_dir(variant, seed)
            if not is_finished(run_dir, settings, variant):
                continue
            for key, value in run_values(run_dir, mode, trained).items():
                row.values[key][seed] = value
        rows.append(row)
    return rows


def reference_row(rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.name == REFERENCE), None)


def main_table(rows: list[Row], seeds: int) -> list[str]:
    lines = [
        "| Variant | What it tests | Seeds | " + " | ".join(h for _, h, _ in METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(METRICS),
    ]
    for r in rows:
        cells = [r.interval(key).format(fmt) for key, _, fmt in METRICS]
        lines.append(f"| {r.name} | {r.description} | {len(r.seeds)}/{seeds} | " + " | ".join(cells) + " |")
    return lines


def difference_table(rows: list[Row]) -> list[str]:
    full = reference_row(rows)
    lines = [
        "| Variant | " + " | ".join(f"Δ {HEADERS[k]}" for k in DIFFERENCES) + " |",
        "|---|" + "---:|" * len(DIFFERENCES),
    ]
    for r in rows:
        if full is None or r is full:
            continue
        cells = [r.difference(k, full).format(_signed(FORMATS[k]), mark=True) for k in DIFFERENCES]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return lines


def _signed(fmt: str) -> str:
    return fmt.replace("{:", "{:+")


def findings(rows: list[Row]) -> list[str]:
    """One line per variant: whether full beats it on mask mIoU and on FID, by how much, with the interval."""
    full = reference_row(rows)
    if full is None:
        return []
    lines = []
    for r in rows:
        if r is full:
            continue
        parts = []
        for key, better in (("mask_miou", "higher"), ("fid", "lower")):
            d = full.difference(key, r)  # full - variant
            if d.n == 0:
                parts.append(f"{key}: no paired seeds")
                continue
            verdict = "no significant difference"
            if d.significant:
                wins = d.mean > 0 if better == "higher" else d.mean < 0
                verdict = "full better" if wins else f"{r.name} better"
            parts.append(
                f"{key} full − {r.name} = {d.format(_signed(FORMATS[key]))} ({verdict}, {d.n} seeds)"
            )
        lines.append(f"- **{r.name}**: " + "; ".join(parts))
    return lines


def csv_rows(rows: list[Row]) -> tuple[list[str], list[list]]:
    """Per row: its seeds, each metric's mean and interval, and the differences from full with significance."""
    header = ["variant", "seeds"] + [f"{key}_{s}" for key, _, _ in METRICS for s in ("mean", "low", "high")]
    header += [f"{key}_diff_{s}" for key in DIFFERENCES for s in ("mean", "low", "high", "significant")]
    full = reference_row(rows)
    out = []
    for r in rows:
        line = [r.name, len(r.seeds)]
        for key, _, _ in METRICS:
            i = r.interval(key)
            line += [_cell(i.mean), _cell(i.low), _cell(i.high)]
        for key in DIFFERENCES:
            d = (
                r.difference(key, full)
                if full is not None and r is not full
                else Interval(math.nan, math.nan, math.nan, 0)
            )
            line += [_cell(d.mean), _cell(d.low), _cell(d.high), d.significant if d.n else None]
        out.append(line)
    return header, out


def _cell(value: float) -> float | None:
    return None if math.isnan(value) else value


def write_csv(rows: list[Row], path: Path) -> None:
    header, lines = csv_rows(rows)
    _write(path, header, lines)


def write_runs_csv(rows: list[Row], path: Path) -> None:
    """Every finished run's own values, exactly (repr), one line per row and seed: what a rerun must reproduce."""
    keys = [key for key, _, _ in METRICS]
    lines = [
        [r.name, seed, *(repr(r.values[k].get(seed, math.nan)) for k in keys)]
        for r in rows
        for seed in r.seeds
    ]
    _write(path, ["variant", "seed", *keys], lines)


def read_runs_csv(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    with path.open() as f:
        return {
            (r["variant"], int(r["seed"])): {
                k: float(v) for k, v in r.items() if k not in ("variant", "seed")
            }
            for r in csv.DictReader(f)
        }


def _write(path: Path, header: list[str], lines: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in line] for line in lines])
