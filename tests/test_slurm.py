"""The sbatch scripts on a real one-node SLURM cluster (tests/slurm_cluster.py): 2 tasks doing DDP on the
CPU (gloo), a plain run and a run requeued mid-way. `make test-slurm`; skipped where SLURM is missing and
cannot be installed."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.slurm.submit import submit, training_job
from tests.slurm_cluster import SlurmCluster, install_reason

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TASKS = 2


@pytest.fixture(scope="module")
def cluster():
    reason = install_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = SlurmCluster.start()
    cluster.env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm")


def overrides(workspace: Path, run_dir: Path, steps: int) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"backbone.path={workspace / 'flux'}",
        f"data.root={workspace / 'data'}",
        f"data.cache_dir={workspace / 'cache'}",
        "data.resolution=32",
        "data.batch_size=2",
        f"trainer.max_steps={steps}",
        "trainer.accelerator=cpu",
        "trainer.checkpoint_every_n_steps=3",
        "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "logger.kind=csv",
        "eval.enabled=false",
    ]


def submit_run(cluster: SlurmCluster, workspace: Path, run_dir: Path, steps: int) -> int:
    script, args, options = training_job(
        "experiments/configs/tiny.yaml",
        overrides(workspace, run_dir, steps),
        gpus_per_node=0,
        tasks_per_node=TASKS,
        cpus_per_task=1,
    )
    return submit(script, args, options, env=cluster.env)


def wait_until(condition, timeout: float, what: str, cluster: SlurmCluster, job_id: int, log: Path):
    end = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > end:
            job = cluster.job(job_id)
            state = f"JobState={job.get('JobState')} Reason={job.get('Reason')}"
            tail = log.read_text()[-3000:] if log.is_file() else "(no log)"
            raise TimeoutError(f"{what} within {timeout:.0f} s ({state})\n{tail}")
        time.sleep(0.25)
    return value


def finished(cluster: SlurmCluster, job_id: int) -> dict[str, str] | None:
    job = cluster.job(job_id)
    return job if job["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL") else None


def global_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


def test_the_sbatch_script_trains_with_two_ddp_tasks(cluster, workspace, runs):
    job_id = submit_run(cluster, workspace, runs / "plain", 6)
    log = runs / "plain" / "slurm" / f"{job_id}.log"
    job = wait_until(lambda: finished(cluster, job_id), 300, "the job did not finish", cluster, job_id, log)
    text = log.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", text[-3000:]
    assert f"job {job_id} (restart 0)" in text
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in text and "GLOBAL_RANK: 1, MEMBER: 2/2" in text
    run = runs / "plain"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6  # a multiple of checkpoint_every_n_steps
    assert ckpt["state_dict"] and all(
        "lora_" in k or k.startswith("denoiser.mogle.") for k in ckpt["state_dict"]
    )
    assert (run / "export" / "mogle.safetensors").is_file()
    assert "train/loss" in (run / "logs" / "version_0" / "metrics.csv").read_text()


def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_at_max_steps(cluster, workspace, runs):
    steps = 30  # a multiple of checkpoint_every_n_steps: last.ckpt is written at the end
    job_id = submit_run(cluster, workspace, runs / "requeued", steps)
    run = runs / "requeued"
    log = run / "slurm" / f"{job_id}.log"
    wait_until(
        lambda: (run / "checkpoints" / "step-000003.ckpt").is_file(),
        300,
        "no checkpoint",
        cluster,
        job_id,
        log,
    )
    # what --signal=USR1@SECONDS sends before the time limit: the signal to the job's steps
    cluster.run("scancel", "--signal=USR1", str(job_id))
    wait_until(
        lambda: cluster.job(job_id)["Restarts"] == "1", 120, "the job was not requeued", cluster, job_id, log
    )
    wait_until(
        lambda: cluster.job(job_id)["JobState"] == "PENDING",
        60,
        "the job is not pending",
        cluster,
        job_id,
        log,
    )
    # slurmd revoked the first run's credential at the requeue, with one-second resolution: a relaunch in
    # that same second is refused ("Job credential revoked") and the job ends FAILED. Let the node go idle
    # and the second turn over before releasing the job.
    wait_until(cluster.idle, 60, "the node did not go idle after the requeue", cluster, job_id, log)
    time.sleep(2)
    cluster.run("scontrol", "update", f"jobid={job_id}", "StartTime=now")  # else it waits ~2 min
    job = wait_until(
        lambda: finished(cluster, job_id), 300, "the requeued job did not finish", cluster, job_id, log
    )
    text = log.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", text[-3000:]

    requeue = run / "checkpoints" / "requeue.ckpt"
    stopped_at = global_step(requeue)
    assert 3 <= stopped_at < steps
    assert f"job {job_id} (restart 0)" in text and f"job {job_id} (restart 1)" in text
    assert "checkpointed on the warning signal, requeueing" in text
    assert re.search(rf"Restoring states from the checkpoint path at \S*{re.escape(str(requeue))}", text)
    assert global_step(run / "checkpoints" / "last.ckpt") == steps
    # the first attempt trained steps 0 .. stopped_at - 1, the resumed one the rest, none twice
    first, second = (run / "logs" / v / "metrics.csv" for v in ("version_0", "version_1"))
    assert _steps(first)[0] == 0 and _steps(first)[-1] < stopped_at
    assert _steps(second) == list(range(stopped_at, steps))


def _steps(metrics_csv: Path) -> list[int]:
    lines = metrics_csv.read_text().splitlines()
    column = lines[0].split(",").index("step")
    header_loss = lines[0].split(",").index("train/loss")
    rows = [line.split(",") for line in lines[1:]]
    return sorted({int(r[column]) for r in rows if r[header_loss]})


def test_the_cluster_harness_reports_why_it_skips(monkeypatch):
    monkeypatch.setattr("tests.slurm_cluster.missing_binaries", lambda: ["sbatch"])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert install_reason() == "SLURM is not installed (sbatch missing) and installing needs root"
