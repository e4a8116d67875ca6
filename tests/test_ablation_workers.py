"""The study in worker processes (`--workers N`): the job order, the sweep waiting for full's first seed, and a
quick study run end to end by two one-thread workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
import time

import pytest

from experiments import ablate_gating
from experiments.ablation import workers
from experiments.ablation.study import StudySettings
from experiments.ablation.workers import SWEEP, Job, jobs, next_job, read_elapsed, run_workers
from tests.test_ablation import study_args


def test_jobs_run_in_task_order_and_the_sweep_waits_for_full_s_first_seed(tmp_path, monkeypatch):
    settings = StudySettings(
        "experiments/configs/tiny.yaml", variants=["full", "plain"], seeds=[0, 1], runs=str(tmp_path)
    )
    pending = jobs(settings)  # nothing on disk: every task, and the sweep after full seed 0
    assert [j.index for j in pending] == [0, SWEEP, 1, 2, 3]
    assert pending[0].argv[-2:] == ["--task", "0"] and pending[1].argv[-1] == "--sweep"
    assert "--workers" not in pending[0].argv  # the tasks run the study's own arguments

    finished = set()
    monkeypatch.setattr(workers, "is_finished", lambda run_dir, s, v: run_dir.name in finished)
    assert next_job(pending, settings, set()).index == 0
    pending.pop(0)
    assert next_job(pending, settings, {0}).index == 1  # full seed 0 trains: the sweep waits
    finished.add("seed0")
    assert next_job(pending, settings, {0}).index == 1  # finished on disk but its process still runs
    assert next_job(pending, settings, set()).index == SWEEP
    assert next_job([pending[0]], settings, set()).index == SWEEP
    finished.clear()
    assert next_job([pending[0]], settings, set()) is None


def test_sigterm_stops_the_jobs_and_keeps_the_elapsed_time(tmp_path, monkeypatch):
    settings = StudySettings("experiments/configs/tiny.yaml", variants=["plain"], runs=str(tmp_path))
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    monkeypatch.setattr(workers, "jobs", lambda s: [Job(0, "plain seed 0", sleeper)])
    procs = []
    popen = workers.subprocess.Popen
    monkeypatch.setattr(
        workers.subprocess, "Popen", lambda *a, **k: procs.append(popen(*a, **k)) or procs[-1]
    )
    armed = time.monotonic()
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(KeyboardInterrupt, match="signal"):
        run_workers(settings, 2, poll=0.1)
    assert procs and procs[0].returncode is not None  # terminated, not left running
    # its clock starts after the timer is armed: up to 1 s minus its own setup, never more than the wait
    assert 0.5 <= read_elapsed(settings)["seconds"] <= time.monotonic() - armed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_workers_go_with_a_whole_study_only(workspace, evaluators, tmp_path):
    args = study_args(workspace, evaluators, tmp_path)
    for extra in (["--task", "0"], ["--gather"], ["--sweep"], ["--verify", "full:0"]):
        with pytest.raises(ValueError, match="--workers runs a whole study"):
            ablate_gating.main([*args, "--workers", "2", *extra])
    with pytest.raises(ValueError, match="--workers 0"):
        ablate_gating.main([*args, "--workers", "0"])


@pytest.mark.slow  # two worker processes train, evaluate and sweep a quick study
def test_two_workers_run_a_quick_study_and_record_their_threads(workspace, evaluators, tmp_path, capsys):
    args = study_args(workspace, evaluators, tmp_path, "--variants", "full,plain", "--workers", "2")
    ablate_gating.main(args)

    printed = capsys.readouterr().out
    assert "3 jobs in 2 workers" in printed and "FAILED" not in printed
    runs, out = tmp_path / "runs", tmp_path / "out"
    for name in ("task-000.log", "task-001.log", "sweep.log"):
        assert (runs / "logs" / name).stat().st_size > 0
    rows = {r["variant"] for r in csv.DictReader((out / "ablation.csv").open())}
    assert rows == {"full", "plain", "mask_dropped"}
    assert (out / "guidance_sweep.csv").is_file()
    origin = json.loads((out / "provenance.json").read_text())
    assert origin["machine"]["torch_threads"] == workers.worker_threads(2)
    assert {"train", "evaluate", "probe", "curve", "sweep"} <= set(origin["seconds"])
    assert (
        origin["elapsed"]["workers"] == 2
        and 0 < origin["elapsed"]["seconds"] < origin["seconds"]["total"] + 60
    )
    assert "the runs in 2 worker processes" in (out / "ablation.md").read_text()

    ablate_gating.main(args)  # all done: no job starts again
    assert "0 jobs in 2 workers" in capsys.readouterr().out
