"""Run the ablation on a SLURM cluster: one job array (an array task per variant and seed, each
resumable) and a gather job that writes the table once every task has succeeded.

The two sbatch scripts are generated into RUNS/slurm/ (beside the runs, with their logs) with the study's exact arguments; extra sbatch
options (partition, GPUs, time) are passed through on the sbatch command line, which takes precedence
over the scripts' #SBATCH lines.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ENTRY = "experiments.ablate_gating"


@dataclass
class SlurmJobs:
    array_id: str
    gather_id: str
    array_script: Path
    gather_script: Path


def script(job_name: str, log: str, command: str) -> str:
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --job-name={job_name}",
            f"#SBATCH --output={log}",
            "set -euo pipefail",
            f"cd {shlex.quote(str(Path.cwd()))}",
            f"exec {command}",
            "",
        ]
    )


def write_scripts(study_argv: list[str], runs: Path) -> tuple[Path, Path]:
    folder = (runs / "slurm").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    base = shlex.join([sys.executable, "-m", ENTRY, *study_argv])
    array = folder / "ablate_array.sbatch"
    array.write_text(script("ablate", f"{folder}/ablate_%A_%a.out", f'{base} --task "$SLURM_ARRAY_TASK_ID"'))
    gather = folder / "ablate_gather.sbatch"
    gather.write_text(script("ablate-gather", f"{folder}/ablate_gather_%j.out", f"{base} --gather"))
    return array, gather


def sbatch(args: list[str]) -> str:
    """Submit, returning the job id (`--parsable` prints "ID" or "ID;CLUSTER")."""
    if shutil.which("sbatch") is None:
        raise ValueError("--slurm: no sbatch on PATH; run it on a SLURM login node")
    done = subprocess.run(["sbatch", "--parsable", *args], check=True, capture_output=True, text=True)
    return done.stdout.strip().split(";")[0]


def submit(study_argv: list[str], num_tasks: int, runs: Path, sbatch_args: list[str]) -> SlurmJobs:
    array, gather = write_scripts(study_argv, runs)
    array_id = sbatch([f"--array=0-{num_tasks - 1}", *sbatch_args, str(array)])
    gather_id = sbatch([f"--dependency=afterok:{array_id}", *sbatch_args, str(gather)])
    return SlurmJobs(array_id, gather_id, array, gather)
