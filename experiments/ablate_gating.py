"""Ablate Face-MoGLE's experts and gate: train every variant as an ordinary run, evaluate, tabulate with
confidence intervals; learning curves, the gate's expert usage, attribute accuracy and the full model's
guidance sweep.

    python -m experiments.ablate_gating [--config CFG] [--variants full,plain,...] [--seeds 0,1,2]
        [--steps N] [--n FACES] [--quick] [key=value ...]
    python -m experiments.ablate_gating ... --verify full:0     # rerun one variant and seed, compare with runs.csv
    python -m experiments.ablate_gating ... --slurm [--sbatch-arg=--partition=gpu ...]
    python -m experiments.ablate_gating ... --gather
    python -m experiments.ablate_gating ... --workers 2      # the runs in 2 processes of cores / 2 threads each

Variants (experiments/ablation/variants.py): full, global_only, local_only, scalar_gate, static_gate, no_gate,
identity_experts, identity_no_gate, plain, mlp_experts, balanced, and the mask_dropped reference row read from
full's runs. Runs go to RUNS/VARIANT/seedS (experiments/ablation/study.py: every stage is skipped when done,
an interrupted run resumes); the results to OUT (experiments/ablation/report.py) and, with a wandb logger, to
a W&B run named "ablation" in RUNS/wandb. --slurm submits experiments/slurm/ablate.sbatch as a job array and
a gather job after it (logs in RUNS/slurm); --task I runs the I-th (variant, seed) alone; --gather runs the
guidance sweep if full's first seed has finished and writes the results from whatever has finished; --sweep
runs that sweep alone. --workers N runs the tasks in N processes (experiments/ablation/workers.py).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path

import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from experiments.ablation import slurm, table
from experiments.ablation.report import lazy_scorer, verify, write_report
from experiments.ablation.study import StudySettings, run_one, run_sweep_of_full
from experiments.ablation.variants import VARIANTS, parse_variants
from experiments.ablation.workers import run_workers, worker_threads
from experiments.config.load import load_config
from experiments.runs.prerequisites import require_config
from experiments.training.loggers import make_logger
from facemogle.cli import run_cli

DEFAULT_CONFIG = "experiments/configs/tiny.yaml"
# --quick: a smoke run of the whole pipeline (checkpoints every step give the learning curves two points)
QUICK = {
    "steps": 2,
    "n": 4,
    "sample_steps": 2,
    "probe_n": 4,
    "curve_n": 4,
    "sweep_n": 4,
    "text_scales": "1,2",
    "mask_scales": "1,4",
}
QUICK_OVERRIDES = ["trainer.checkpoint_every_n_steps=1"]
STUDY = StudySettings(DEFAULT_CONFIG)  # the defaults


def scales(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.ablate_gating", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="the training config every variant starts from")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from the list above")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; two or more give intervals")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    ap.add_argument("--n", type=int, default=None, help="test faces evaluated (default: the whole split)")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampling steps (default: the config's)")
    ap.add_argument(
        "--probe-n", type=int, default=None, help=f"faces for gate usage and attributes ({STUDY.probe_n})"
    )
    ap.add_argument(
        "--curve-variants", default=",".join(STUDY.curve_variants), help="variants with learning curves"
    )
    ap.add_argument(
        "--curve-n", type=int, default=None, help=f"faces at each step checkpoint ({STUDY.curve_n})"
    )
    ap.add_argument("--text-scales", default=None, help=f"the guidance sweep's ({scales(STUDY.text_scales)})")
    ap.add_argument("--mask-scales", default=None, help=f"the guidance sweep's ({scales(STUDY.mask_scales)})")
    ap.add_argument(
        "--sweep-n", type=int, default=None, help=f"faces a guidance sweep point ({STUDY.sweep_n})"
    )
    ap.add_argument("--quick", action="store_true", help=f"smoke mode: {QUICK} unless given")
    ap.add_argument("--runs", default="runs/ablate", help="run directories: RUNS/VARIANT/seedS")
    ap.add_argument("--out", default="results/ablation", help="where the results go")
    ap.add_argument("--eval-cache-dir", default="cache/eval", help="real-image feature cache of evaluation")
    action = ap.add_mutually_exclusive_group()
    action.add_argument("--task", type=int, default=None, help="run only the TASK-th (variant, seed)")
    action.add_argument(
        "--gather", action="store_true", help="only the sweep and the results from finished runs"
    )
    action.add_argument(
        "--sweep", action="store_true", help="only full's guidance sweep, once its run finished"
    )
    action.add_argument("--slurm", action="store_true", help="submit a SLURM job array and a gather job")
    action.add_argument(
        "--verify", default=None, metavar="VARIANT:SEED", help="rerun one run, compare with runs.csv"
    )
    ap.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option (repeatable)")
    ap.add_argument(
        "--workers", type=int, default=1, help="processes running the tasks, each with cores / N threads"
    )
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every variant")
    return ap.parse_args(argv)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers") from err
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{flag} {text!r}: expected distinct comma-separated integers")
    return values


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ValueError(f"{flag} {text!r}: expected comma-separated numbers") from err


def settings_from(args: argparse.Namespace) -> StudySettings:
    quick = QUICK if args.quick else {}

    def pick(name: str, default):
        given = getattr(args, name)
        return given if given is not None else quick.get(name, default)

    overrides = list(args.overrides)
    if args.quick:
        keys = {o.split("=", 1)[0] for o in overrides}
        overrides += [o for o in QUICK_OVERRIDES if o.split("=", 1)[0] not in keys]
    return StudySettings(
        config=args.config,
        overrides=overrides,
        variants=parse_variants(args.variants),
        seeds=_ints(args.seeds, "--seeds"),
        steps=pick("steps", None),
        n=pick("n", None),
        sample_steps=pick("sample_steps", None),
        runs=args.runs,
        out=args.out,
        eval_cache_dir=args.eval_cache_dir,
        probe_n=pick("probe_n", STUDY.probe_n),
        curve_variants=parse_variants(args.curve_variants) if args.curve_variants else [],
        curve_n=pick("curve_n", STUDY.curve_n),
        text_scales=_floats(pick("text_scales", scales(STUDY.text_scales)), "--text-scales"),
        mask_scales=_floats(pick("mask_scales", scales(STUDY.mask_scales)), "--mask-scales"),
        sweep_n=pick("sweep_n", STUDY.sweep_n),
    )


def command(settings: StudySettings) -> str:
    return shlex.join(["python", "-m", "experiments.ablate_gating", *settings.to_argv()])


def gather(settings: StudySettings, scorer) -> str:
    """The guidance sweep (once full's first seed has finished), then the results from the finished runs."""
    run_sweep_of_full(settings, scorer)
    path = write_report(settings, command(settings))
    log_to_wandb(settings)
    return str(path)


def log_to_wandb(settings: StudySettings) -> None:
    """With the config's logger a wandb one: the table and the figures as a W&B run in RUNS/wandb."""
    config = load_config(settings.config, settings.overrides)
    config = replace(config, run_dir=settings.runs, logger=replace(config.logger, name="ablation"))
    logger = make_logger(config)
    if not isinstance(logger, WandbLogger):
        return
    header, rows = table.csv_rows(table.read_rows(settings))
    logger.log_table("ablation/table", columns=header, data=rows)
    for name in ("gate_usage", "gate_weights", "learning_curves", "guidance_sweep"):
        path = Path(settings.out) / f"{name}.png"
        if path.is_file():
            logger.log_image(f"ablation/{name}", [Image.open(path)])
    logger.experiment.finish()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = settings_from(args)
    if args.sbatch_arg and not args.slurm:
        raise ValueError("--sbatch-arg only goes with --slurm")
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: expected 1 or more")
    if args.workers > 1 and (args.task is not None or args.gather or args.sweep or args.slurm or args.verify):
        raise ValueError(
            "--workers runs a whole study: it does not go with --task, --gather, --sweep, --slurm or --verify"
        )
    tasks = settings.tasks()
    for variant, seed in tasks:  # a bad key or value fails here, before anything runs or is queued
        settings.run_config(variant, seed)
    if args.slurm:
        jobs = slurm.submit_study(settings.to_argv(), len(tasks), settings.runs, args.sbatch_arg)
        print(f"submitted array job {jobs.array_id} ({len(tasks)} tasks) and gather job {jobs.gather_id}")
        return
    if not args.gather:  # gathering reads what exists
        require_config(settings.run_config(*tasks[0]), evaluators=True)
    scorer = lazy_scorer(settings)
    if args.verify is not None:
        variant, _, seed = args.verify.partition(":")
        if variant not in VARIANTS or not seed.isdigit():
            raise ValueError(
                f"--verify {args.verify!r}: expected VARIANT:SEED with VARIANT from {list(VARIANTS)}"
            )
        differences = verify(settings, variant, int(seed), scorer)
        if differences:
            raise ValueError(f"--verify {args.verify}: not reproduced: " + "; ".join(differences))
        print(f"reproduced {args.verify}: every value equals {settings.out}/runs.csv")
        return
    if args.task is not None:
        if not 0 <= args.task < len(tasks):
            raise ValueError(f"--task {args.task}: this study has tasks 0..{len(tasks) - 1}")
        run_one(settings, *tasks[args.task], scorer)
        return
    if args.sweep:
        ran = run_sweep_of_full(settings, scorer)
        print("ran the guidance sweep" if ran else "no sweep: full's first seed has not finished")
        return
    failures = []
    if args.workers > 1:
        failures = run_workers(settings, args.workers)
        torch.set_num_threads(worker_threads(args.workers))  # provenance.json records the runs' threads
    elif not args.gather:
        for variant, seed in tasks:
            run_one(settings, variant, seed, scorer)
    print(f"wrote {gather(settings, scorer)}")
    if failures:
        raise ValueError(f"{len(failures)} jobs failed (the results hold the rest): " + "; ".join(failures))


if __name__ == "__main__":
    run_cli(main)
