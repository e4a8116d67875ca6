"""The study's results, written to OUT (results/ablation by default) from the runs on disk:

    ablation.md          provenance; mean [95 % CI] per variant; seed-paired differences from full; full against
                         each variant; gate usage; learning curves; the guidance sweep; the paper's numbers
    ablation.csv         per row: each metric's mean and interval, the differences from full and their significance
    runs.csv             every run's own values, exactly: what `--verify VARIANT:SEED` must reproduce
    learning_curves.png / .csv, gate_usage.png / .csv, gate_entropy.csv, gate_weights.png / .csv,
    guidance_sweep.png / .csv, provenance.json

`verify` reruns one variant and seed from scratch (in RUNS/verify) and compares its values with runs.csv.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from experiments.ablation import gate_plot, sweep_report, table
from experiments.ablation.attributes import AttributeScorer, scorer_for
from experiments.ablation.curves import CURVE, STEP_FILE
from experiments.ablation.plots import Series, line_chart, side_by_side
from experiments.ablation.provenance import (
    directory_sha256,
    git_commit,
    hours_minutes,
    study_seconds,
)
from experiments.ablation.reports import evaluated
from experiments.ablation.stats import mean_interval
from experiments.ablation.study import MODE, SPLIT, StudySettings, run_one
from experiments.ablation.sweep import read_sweep
from experiments.ablation.variants import PAPER, PAPER_COLUMNS
from experiments.ablation.workers import read_elapsed
from facemogle.atomic import atomic_write_json, atomic_write_text
from facemogle.release import machine

CURVE_METRICS = ("mask_miou", "fid", "clip_score")
NO_SWEEP = "Not run: full's first seed has not finished, or its backbone samples with a guidance embedding."


def read_curves(settings: StudySettings) -> list[tuple[str, int, int, dict]]:
    """(variant, seed, step, the evaluation's text+mask values) of every evaluated curve point."""
    n = settings.curve_count()
    found = []
    for variant in [v for v in settings.curve_variants if v in settings.variants]:
        for seed in settings.seeds:
            for point in sorted((settings.run_dir(variant, seed) / CURVE).glob("step-*")):
                report = point / "eval" / f"{SPLIT}.json"
                match = STEP_FILE.fullmatch(point.name + ".ckpt")
                if match and evaluated(report, (MODE,), n, settings.sample()):
                    values = json.loads(report.read_text())[MODE]
                    found.append((variant, seed, int(match.group(1)), values))
    return found


def _curve_series(points: list[tuple[str, int, int, dict]], key: str) -> list[Series]:
    series = []
    for variant in dict.fromkeys(p[0] for p in points):
        steps = sorted({p[2] for p in points if p[0] == variant})
        intervals = [
            mean_interval([_num(p[3].get(key)) for p in points if p[0] == variant and p[2] == s])
            for s in steps
        ]
        series.append(
            Series(
                variant,
                steps,
                [i.mean for i in intervals],
                [i.low for i in intervals],
                [i.high for i in intervals],
            )
        )
    return series


def _num(value) -> float:
    return math.nan if value is None else float(value)


def curve_figure(points: list[tuple[str, int, int, dict]]) -> Image.Image:
    return side_by_side(
        [
            line_chart(_curve_series(points, "mask_miou"), "mask mIoU against training step", "step", "mIoU"),
            line_chart(_curve_series(points, "fid"), "FID against training step", "step", "FID"),
        ]
    )


def curve_table(points: list[tuple[str, int, int, dict]]) -> list[str]:
    steps = sorted({p[2] for p in points})
    lines = ["| Variant | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---:|" * len(steps)]
    for s in _curve_series(points, "mask_miou"):
        by_step = {x: (m, lo, hi) for x, m, lo, hi in zip(s.x, s.y, s.low, s.high, strict=True)}
        cells = []
        for step in steps:
            mean, low, high = by_step.get(step, (math.nan,) * 3)
            cells.append(
                "–"
                if math.isnan(mean)
                else f"{mean:.3f}" + ("" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]")
            )
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return lines


def write_curve_csv(points: list[tuple[str, int, int, dict]], path: Path) -> None:
    lines = [
        [v, seed, step, *(repr(_num(values.get(k))) for k in CURVE_METRICS)]
        for v, seed, step, values in points
    ]
    table._write(path, ["variant", "seed", "step", *CURVE_METRICS], lines)


def provenance(settings: StudySettings, command: str) -> dict:
    backbone = settings.run_config(settings.variants[0], settings.seeds[0]).backbone.path
    return {
        "command": command,
        "commit": git_commit(settings.out),
        "backbone": backbone,
        "backbone_sha256": directory_sha256(backbone) if Path(backbone).is_dir() else None,
        "machine": machine(),
        "seconds": study_seconds(settings),
        "elapsed": read_elapsed(settings),  # None unless the runs ran in --workers
    }


def write_report(settings: StudySettings, command: str) -> Path:
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = table.read_rows(settings)
    table.write_csv(rows, out / "ablation.csv")
    table.write_runs_csv(rows, out / "runs.csv")
    gates = gate_plot.read_gates(settings)
    if gates:
        gate_plot.usage_figure(gates, settings.variants).save(out / "gate_usage.png")
        gate_plot.write_csvs(gates, out / "gate_usage.csv", out / "gate_entropy.csv")
        trajectory = gate_plot.full_trajectory(gates)
        if trajectory is not None:
            gate_plot.plot(trajectory).save(out / "gate_weights.png")
            gate_plot.write_csv(trajectory, out / "gate_weights.csv")
    points = read_curves(settings)
    if points:
        curve_figure(points).save(out / "learning_curves.png")
        write_curve_csv(points, out / "learning_curves.csv")
    sweep = settings.sweep_settings()
    swept = read_sweep(sweep) if "full" in settings.variants else []
    if swept:
        sweep_report.figure(swept, sweep).save(out / "guidance_sweep.png")
        sweep_report.write_csv(swept, out / "guidance_sweep.csv")
    origin = provenance(settings, command)
    atomic_write_json(out / "provenance.json", origin, indent=2)
    text = markdown(settings, origin, rows, gates, points, swept)
    atomic_write_text(out / "ablation.md", text)
    return out / "ablation.md"


def markdown(settings: StudySettings, origin: dict, rows, gates, points, swept) -> str:
    seconds = origin["seconds"]
    stages = ", ".join(f"{k} {hours_minutes(v)}" for k, v in seconds.items() if k != "total")
    m = origin["machine"]
    faces = "all" if settings.n is None else settings.n
    config = settings.run_config(settings.variants[0], settings.seeds[0])
    lines = [
        "# Expert and gate ablation",
        "",
        f"Made by `{origin['command']}` at commit `{origin['commit']}`, on {m['cpu']} ({m['cores']} cores, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}); backbone `{origin['backbone']}`, sha256 "
        f"`{origin['backbone_sha256']}`. Compute time {hours_minutes(seconds['total'])} ({stages}): the sum "
        "of the seconds the runs recorded for each stage."
        + (
            f" Elapsed {hours_minutes(elapsed['seconds'])}: the runs in {elapsed['workers']} worker processes of "
            f"{elapsed['threads']} torch threads."
            if (elapsed := origin.get("elapsed"))
            else ""
        ),
        "",
        f"Each variant is an ordinary training run from `{settings.config}` ({config.trainer.max_steps} steps), "
        "differing only in the keys experiments/ablation/variants.py sets, evaluated on the test split "
        f"({faces} faces, text+mask, {config.train.sample.steps if settings.sample_steps is None else settings.sample_steps} "
        f"sampling steps, sampling seed 0). Seeds {', '.join(map(str, settings.seeds))}: the mean [95 % "
        "confidence interval, Student t over seeds]. Attribute accuracy: the hair colour and lipstick the "
        f"caption asks for, read from the colours of the parsed regions, on the first {settings.probe_n or faces} "
        "faces (experiments/ablation/attributes.py). The row mask_dropped samples full from the text alone with no "
        "condition tokens: the bare backbone, the same for every seed.",
        "",
        *table.main_table(rows, len(settings.seeds)),
        "",
        "## Differences from full",
        "",
        "The variant's value minus full's, seed by seed: mean [95 % interval]; `*` where the interval excludes 0.",
        "",
        *table.difference_table(rows),
        "",
        "## Full against each variant: mask mIoU and FID",
        "",
        *table.findings(rows),
        "",
        "## Gate usage",
        "",
        f"Text+mask sampling of the first {settings.probe_n or faces} test faces (experiments/ablation/probe.py): "
        "the share of the image tokens' mixture each expert gets, its entropy (log e when even), exp(entropy of "
        "the mean share) as the number of experts carrying the load, and per region the weight its tokens give the "
        "region's own expert. Per step and region: gate_usage.png, gate_usage.csv, gate_entropy.csv; the full "
        "model's own and global expert per region and step: gate_weights.png.",
        "",
        *gate_plot.summary_table(gates, settings.variants),
        "",
        "## Learning curves",
        "",
        f"Mask mIoU of each step checkpoint, evaluated like the final model on the first "
        f"{settings.curve_n or faces} test faces (experiments/ablation/curves.py); learning_curves.png also "
        "shows FID.",
        "",
        *(curve_table(points) if points else ["(no curve point evaluated yet)"]),
        "",
        f"## Guidance sweep: full, seed {settings.seeds[0]}",
        "",
        *([sweep_report.markdown(swept, settings.sweep_settings())] if swept else [NO_SWEEP]),
        "",
        "## For reference: the paper's numbers (not ours)",
        "",
        "Face-MoGLE (arXiv 2509.00428) Tables 3–5, as published: FLUX.1-dev on MM-CelebA-HQ, FID / KID / "
        "Mask / Text in the paper's own units. Another model, data set and evaluators than the tables above: "
        "compare the order of the variants, not the values. The paper's experts are MLPs (our mlp_experts).",
        "",
        "| Variant | Paper's name | " + " | ".join(PAPER_COLUMNS) + " |",
        "|---|---|" + "---:|" * len(PAPER_COLUMNS),
    ]
    for name in settings.variants:
        if name in PAPER:
            paper_name, values = PAPER[name]
            lines.append(f"| {name} | {paper_name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def verify(settings: StudySettings, variant: str, seed: int, scorer) -> list[str]:
    """Rerun one variant and seed from scratch in RUNS/verify and compare its values with OUT/runs.csv
    exactly (training minutes aside); -> the differences, none when the row is reproduced."""
    recorded = Path(settings.out) / "runs.csv"
    if not recorded.is_file():
        raise ValueError(f"{recorded} does not exist: run the study (or --gather) before --verify")
    expected = table.read_runs_csv(recorded)
    origin = Path(settings.out) / "provenance.json"
    if origin.is_file():  # a run's bits depend on the thread count: train with the study's
        torch.set_num_threads(json.loads(origin.read_text())["machine"]["torch_threads"])
    scratch = replace(
        settings,
        runs=str(Path(settings.runs) / "verify"),
        variants=[variant],
        seeds=[seed],
        curve_variants=[],
    )
    shutil.rmtree(scratch.run_dir(variant, seed), ignore_errors=True)
    run_one(scratch, variant, seed, scorer)
    differences = []
    for row in table.read_rows(scratch):
        if (row.name, seed) not in expected:
            raise ValueError(f"{recorded} has no row for {row.name} seed {seed}")
        for key, want in expected[(row.name, seed)].items():
            got = row.values[key].get(seed, math.nan)
            if key != "train_minutes" and not (got == want or (math.isnan(got) and math.isnan(want))):
                differences.append(f"{row.name} seed {seed} {key}: {got!r} against {want!r}")
    return differences


def lazy_scorer(settings: StudySettings):
    """A function giving the attribute scorer of the study's config (None without a parser), built on first use."""
    built: list[AttributeScorer | None] = []

    def get() -> AttributeScorer | None:
        if not built:
            config = settings.run_config(settings.variants[0], settings.seeds[0])
            paths = config.eval.evaluators
            built.append(scorer_for(paths.parser_path, config.data, paths.parser_label_order))
        return built[0]

    return get
