"""At the command line the project's own errors are one line and exit status 2; FACEMOGLE_TRACEBACK=1
shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("experiments.train", "--config", "experiments/configs/tiny.yaml", "train.optim.lr=-1"),
            "train.optim.lr=-1.0",
        ),
        (("experiments.train", "trainer.maxsteps=3"), "unknown config key 'trainer.maxsteps'"),
        (
            ("experiments.sample", "--run", "runs/nowhere", "--prompt", "a face", "--out", "x"),
            "runs/nowhere/export",
        ),
        (("data_modules.validate", "no/such/data"), "no/such/data"),
        (("experiments.train_evaluators", "parser.stepz=3"), "unknown config key 'parser.stepz'"),
    ],
)
def test_an_entry_point_reports_a_bad_input_in_one_line_with_status_2(args, message):
    done = run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in done.stderr
    assert "torchvision" not in done.stderr  # transformers' image-processor fallback warned on every start


def test_the_traceback_is_there_on_request():
    done = run("experiments.train", "trainer.maxsteps=3", FACEMOGLE_TRACEBACK="1")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_sample_refuses_zero_images():
    done = run("experiments.sample", "--run", "runs/nowhere", "--prompt", "a face", "--n", "0", "--out", "x")
    assert done.returncode == 2 and "--n 0: give at least 1 image" in done.stderr
