"""Evaluate one trained run over a grid of true-CFG text and mask scales and plot the trade-off surface.

    python -m experiments.guidance_sweep --run runs/tiny --text-scales 1,2,3.5,5 --mask-scales 1,2,4,6 \\
        [--n 60] [--probe-n 48] [--steps S] [--out DIR] [--clip DIR --parser DIR]

Each point is evaluated by experiments.evaluation.run (mask mIoU, CLIP score, FID, KID, ...) in the text+mask
mode, the text-only mode once per text scale, and scored for attribute accuracy (hair colour, lipstick) with
the parser; points go to RUN/sweep/ (experiments/ablation/sweep.py), done ones are kept, and OUT (default
RUN/sweep) gets guidance_sweep.md, .csv and .png with the default chosen on the surface: text+mask mIoU >=
--min-miou and a CLIP score >= --min-clip-ratio x the text-only one, the lowest FID among those.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from experiments.ablation import sweep, sweep_report
from experiments.ablation.attributes import scorer_for
from experiments.config.load import load_config
from experiments.runs.io import EXPORT
from experiments.runs.prerequisites import require_run
from facemogle.atomic import atomic_write_text
from facemogle.cli import run_cli


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"{text!r}: expected comma-separated numbers") from err


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.guidance_sweep", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--run", required=True, help="a finished run directory (with export/)")
    ap.add_argument("--text-scales", required=True, type=floats, help="comma-separated true-CFG text scales")
    ap.add_argument("--mask-scales", required=True, type=floats, help="comma-separated true-CFG mask scales")
    ap.add_argument("--n", type=int, default=None, help="test faces a point (default: the whole split)")
    ap.add_argument("--probe-n", type=int, default=None, help="faces scored for attributes a point (0: none)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's)")
    ap.add_argument("--out", default=None, help="where the report goes (default: RUN/sweep)")
    ap.add_argument(
        "--clip", default=None, help="CLIP directory (default: the run's eval.evaluators.clip_path)"
    )
    ap.add_argument("--parser", default=None, help="face parser directory (default: the run's)")
    ap.add_argument("--cache-dir", default="cache/eval", help="real-image feature cache ('' for none)")
    ap.add_argument("--min-miou", type=float, default=sweep.SweepSettings.min_miou)
    ap.add_argument("--min-clip-ratio", type=float, default=sweep.SweepSettings.min_clip_ratio)
    return ap.parse_args(argv)


def write_report(results: list[sweep.PointResult], settings: sweep.SweepSettings, out: Path) -> Path:
    """OUT/guidance_sweep.md, .csv and .png."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "guidance_sweep.md", "# Guidance sweep\n\n" + sweep_report.markdown(results, settings)
    )
    sweep_report.write_csv(results, out / "guidance_sweep.csv")
    sweep_report.figure(results, settings).save(out / "guidance_sweep.png")
    return out / "guidance_sweep.md"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_run(args.run, data=True)
    config = load_config(Path(args.run) / EXPORT / "config.yaml")
    evaluators = replace(
        config.eval.evaluators,
        clip_path=args.clip or config.eval.evaluators.clip_path,
        parser_path=args.parser or config.eval.evaluators.parser_path,
    )
    require_run(args.run, clip=evaluators.clip_path, parser=evaluators.parser_path)
    settings = sweep.SweepSettings(
        run=args.run,
        text_scales=args.text_scales,
        mask_scales=args.mask_scales,
        n=args.n,
        probe_n=args.probe_n,
        sample_steps=args.steps,
        evaluators=evaluators,
        cache_dir=args.cache_dir or None,
        min_miou=args.min_miou,
        min_clip_ratio=args.min_clip_ratio,
    )
    scorer = None
    if args.probe_n != 0:
        scorer = scorer_for(evaluators.parser_path, config.data, evaluators.parser_label_order)
    results = sweep.run_sweep(settings, scorer)
    path = write_report(results, settings, Path(args.out) if args.out else Path(args.run) / sweep.SWEEP)
    print(sweep_report.choice_text(results, settings))
    print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
