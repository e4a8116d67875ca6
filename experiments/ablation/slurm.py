"""The ablation on SLURM: one job array, a task per (variant, seed), each an ordinary resumable run, and a
gather job that writes the table once every task has succeeded (`--dependency=afterok`).

Both jobs run experiments/slurm/ablate.sbatch, submitted with experiments.slurm.submit; their logs go to
RUNS/slurm/. Extra sbatch options (partition, GPUs, time) come after the script's own #SBATCH lines on
the command line and take precedence over them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from experiments.slurm.submit import SLURM_DIR, submit

SCRIPT = SLURM_DIR / "ablate.sbatch"


@dataclass
class SlurmJobs:
    array_id: int
    gather_id: int


def submit_study(study_argv: list[str], num_tasks: int, runs: str, sbatch_args: list[str]) -> SlurmJobs:
    if shutil.which("sbatch") is None:
        raise ValueError("--slurm: no sbatch on PATH; run it on a SLURM login node")
    logs = Path(runs) / "slurm"
    array_id = submit(
        SCRIPT, study_argv, [f"--array=0-{num_tasks - 1}", f"--output={logs}/%A_%a.log", *sbatch_args]
    )
    gather_options = [
        f"--dependency=afterok:{array_id}",
        "--kill-on-invalid-dep=yes",  # a failed task cancels the gather instead of leaving it pending
        f"--output={logs}/gather-%j.log",
        *sbatch_args,
    ]
    return SlurmJobs(array_id, submit(SCRIPT, [*study_argv, "--gather"], gather_options))
