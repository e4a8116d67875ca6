"""Ablate Face-MoGLE's experts and gate: train every variant as an ordinary run, evaluate, tabulate.

    python -m experiments.ablate_gating [--config CFG] [--variants full,plain,...] [--seeds 0,1]
        [--steps N] [--n FACES] [--quick] [key=value ...]
    python -m experiments.ablate_gating ... --slurm [--sbatch-arg=--partition=gpu ...]
    python -m experiments.ablate_gating ... --gather

Variants (experiments/ablation/variants.py): full, scalar_gate, static_gate, no_gate, global_only,
local_only, identity_experts, identity_no_gate, plain. Runs go to RUNS/VARIANT/seedS (finished ones
are skipped, interrupted ones resume); the table to OUT/ablation.md and OUT/ablation.csv, the full
model's gate over sampling steps to OUT/gate_weights.png and .csv, and, with a wandb logger, to a
W&B run named "ablation" in RUNS/wandb. --slurm submits experiments/slurm/ablate.sbatch as a job array
and a gather job after it (logs in RUNS/slurm); --task I runs the I-th (variant, seed) alone.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from experiments.ablation import gate_plot, slurm, table
from experiments.ablation.study import TRAIN_RECORD, StudySettings, is_evaluated, run_one
from experiments.ablation.variants import VARIANTS, parse_variants
from experiments.config import load_config
from experiments.training import make_logger

DEFAULT_CONFIG = "experiments/configs/tiny.yaml"
QUICK = {"steps": 2, "n": 4, "sample_steps": 2}  # --quick: a smoke run of the whole pipeline
GATE_PLOT_FACES = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.ablate_gating", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="the training config every variant starts from")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from the list above")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; two or more give mean ± std")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    ap.add_argument("--n", type=int, default=None, help="test faces evaluated (default: the whole split)")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampling steps (default: the config's)")
    ap.add_argument("--quick", action="store_true", help=f"smoke mode: {QUICK} unless given")
    ap.add_argument("--runs", default="runs/ablate", help="run directories: RUNS/VARIANT/seedS")
    ap.add_argument("--out", default="results/ablation", help="where the table and the gate plot go")
    ap.add_argument("--eval-cache-dir", default="cache/eval", help="real-image feature cache of evaluation")
    action = ap.add_mutually_exclusive_group()
    action.add_argument("--task", type=int, default=None, help="run only the TASK-th (variant, seed)")
    action.add_argument("--gather", action="store_true", help="only write the table from finished runs")
    action.add_argument("--slurm", action="store_true", help="submit a SLURM job array and a gather job")
    ap.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option (repeatable)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every variant")
    return ap.parse_args(argv)


def settings_from(args: argparse.Namespace) -> StudySettings:
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as err:
        raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers") from err
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {args.seeds!r}: expected distinct comma-separated integers")
    quick = QUICK if args.quick else {}
    return StudySettings(
        config=args.config,
        overrides=list(args.overrides),
        variants=parse_variants(args.variants),
        seeds=seeds,
        steps=args.steps if args.steps is not None else quick.get("steps"),
        n=args.n if args.n is not None else quick.get("n"),
        sample_steps=args.sample_steps if args.sample_steps is not None else quick.get("sample_steps"),
        runs=args.runs,
        out=args.out,
        eval_cache_dir=args.eval_cache_dir,
    )


def command(settings: StudySettings) -> str:
    return shlex.join(["python", "-m", "experiments.ablate_gating", *settings.to_argv()])


def gather(settings: StudySettings) -> Path:
    """Write OUT/ablation.md and .csv from the finished runs, the full model's gate plot, the W&B table."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    results = table.read_results(settings)
    (out / "ablation.md").write_text(table.markdown(results, settings, command(settings)))
    table.write_csv(results, out / "ablation.csv")
    picture = None
    full = settings.run_dir("full", settings.seeds[0])
    if "full" in settings.variants and is_evaluated(full, settings) and (full / TRAIN_RECORD).is_file():
        faces = min(GATE_PLOT_FACES, settings.n or GATE_PLOT_FACES)
        trajectory = gate_plot.gate_trajectory(full, faces, settings.sample_steps)
        picture = gate_plot.plot(trajectory)
        Image.fromarray(picture).save(out / "gate_weights.png")
        gate_plot.write_csv(trajectory, out / "gate_weights.csv")
    log_to_wandb(settings, results, picture)
    return out / "ablation.md"


def log_to_wandb(settings: StudySettings, results: list[table.VariantResult], picture) -> None:
    """With the config's logger a wandb one: the table (and gate plot) as a W&B run in RUNS/wandb."""
    config = load_config(settings.config, settings.overrides)
    config = replace(config, run_dir=settings.runs, logger=replace(config.logger, name="ablation"))
    logger = make_logger(config)
    if not isinstance(logger, WandbLogger):
        return
    header, rows = table.csv_rows(results)
    logger.log_table("ablation/table", columns=header, data=rows)
    if picture is not None:
        logger.log_image("ablation/gate_weights", [picture], caption=["full model: gate weight per region"])
    logger.experiment.finish()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = settings_from(args)
    if args.sbatch_arg and not args.slurm:
        raise ValueError("--sbatch-arg only goes with --slurm")
    tasks = settings.tasks()
    if args.slurm:
        for variant, seed in tasks:  # a bad key or value fails here, not in the queue
            settings.run_config(variant, seed)
        jobs = slurm.submit_study(settings.to_argv(), len(tasks), settings.runs, args.sbatch_arg)
        print(f"submitted array job {jobs.array_id} ({len(tasks)} tasks) and gather job {jobs.gather_id}")
        return
    if args.task is not None:
        if not 0 <= args.task < len(tasks):
            raise ValueError(f"--task {args.task}: this study has tasks 0..{len(tasks) - 1}")
        run_one(settings, *tasks[args.task])
        return
    if not args.gather:
        for variant, seed in tasks:
            run_one(settings, variant, seed)
    print(f"wrote {gather(settings)}")


if __name__ == "__main__":
    main()
