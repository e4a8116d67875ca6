"""Submit a training config to SLURM:

    python -m experiments.slurm.submit --config experiments/configs/flux_mmcelebahq.yaml \\
        [--nodes 2] [--gpus-per-node 8] [--cpus-per-task 8] [--time 24:00:00] [--partition P] [--sbatch=--account=A ...] [key=value ...]

The config and overrides are checked here, before anything is queued; the job's log is
RUN_DIR/slurm/JOBID.log (appended to across requeues). `sbatch_command` and `submit` are the reusable
parts: any sbatch script with any arguments and options (a job array, for instance).
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from experiments.config.load import load_config
from facemogle.cli import run_cli

SLURM_DIR = Path(__file__).resolve().parent
REPO = SLURM_DIR.parents[1]
SINGLE_NODE = SLURM_DIR / "train.sbatch"
MULTI_NODE = SLURM_DIR / "train_multinode.sbatch"


def sbatch_command(script: str | Path, script_args: Sequence[str], options: Sequence[str] = ()) -> list[str]:
    """`sbatch --parsable OPTIONS SCRIPT ARGS`; options are sbatch's own (`--nodes=2`, `--array=0-3`)."""
    return ["sbatch", "--parsable", *options, str(script), *script_args]


def submit(
    script: str | Path,
    script_args: Sequence[str],
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> int:
    """Queue `script` with its arguments from the repository root; returns the job id. The folders of
    `--output=` / `--error=` files are made first (sbatch does not, and the job would log nowhere)."""
    if not Path(script).is_file():
        raise ValueError(f"sbatch script {script} does not exist")
    for option in options:
        if option.startswith(("--output=", "--error=")):
            (REPO / option.split("=", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    command = sbatch_command(script, script_args, [f"--chdir={REPO}", *options])
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return int(done.stdout.strip().split(";")[0])  # "jobid" or "jobid;cluster"


def training_job(
    config: str | None,
    overrides: Sequence[str] = (),
    nodes: int = 1,
    gpus_per_node: int = 8,
    tasks_per_node: int | None = None,
    cpus_per_task: int | None = None,
    time: str | None = None,
    partition: str | None = None,
    extra: Sequence[str] = (),
) -> tuple[Path, list[str], list[str]]:
    """(script, script arguments, sbatch options) for one training run, logging to RUN_DIR/slurm/JOBID.log.

    One task per GPU; `gpus_per_node=0` with `tasks_per_node` gives CPU processes (gloo)."""
    if nodes < 1:
        raise ValueError(f"--nodes {nodes}: at least 1")
    tasks = gpus_per_node if tasks_per_node is None else tasks_per_node
    if tasks < 1:
        raise ValueError(f"--tasks-per-node {tasks}: at least 1 (set it when --gpus-per-node is 0)")
    run_dir = Path(load_config(config, list(overrides)).run_dir)  # a bad key fails here, not in the queue
    log_dir = run_dir if run_dir.is_absolute() else REPO / run_dir
    options = [
        f"--nodes={nodes}",
        f"--ntasks-per-node={tasks}",
        f"--gpus-per-node={gpus_per_node}",
        f"--job-name={run_dir.name}",
        f"--output={log_dir / 'slurm' / '%j.log'}",
    ]
    options += [f"--cpus-per-task={cpus_per_task}"] if cpus_per_task else []
    options += [f"--time={time}"] if time else []
    options += [f"--partition={partition}"] if partition else []
    args = (["--config", str(config)] if config else []) + list(overrides)
    return (SINGLE_NODE if nodes == 1 else MULTI_NODE), args, options + list(extra)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.slurm.submit", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="a YAML file mirroring experiments.config.Config")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--tasks-per-node", type=int, help="default: one per GPU")
    p.add_argument("--cpus-per-task", type=int, help="default: the script's (8)")
    p.add_argument("--time", help="time limit, e.g. 24:00:00 (default: the script's)")
    p.add_argument("--partition")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION", help="another sbatch option")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch command, queue nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args(argv)
    script, args, options = training_job(
        a.config,
        a.overrides,
        a.nodes,
        a.gpus_per_node,
        a.tasks_per_node,
        a.cpus_per_task,
        a.time,
        a.partition,
        a.sbatch,
    )
    if a.dry_run:
        print(" ".join(sbatch_command(script, args, [f"--chdir={REPO}", *options])))
        return
    print(submit(script, args, options))


if __name__ == "__main__":
    run_cli(main)
