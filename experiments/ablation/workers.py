"""The study on one machine in N worker processes (`--workers N`).

Every (variant, seed) runs as its own `python -m experiments.ablate_gating ... --task I` with cores // N torch
threads, N at a time, in task order; the full model's guidance sweep (`--sweep`) runs in the first free worker
once full's first seed has finished. On a small CPU this beats one process with every thread: a tiny model's
step does not use two cores fully, two one-thread trainings do. Each job logs to RUNS/logs/; a killed job
resumes like any run. The caller gathers the results afterwards with the same thread count, so provenance.json
records the threads the runs used (their bits depend on it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.ablation.study import StudySettings, is_complete, is_finished, sweep_done
from facemogle.atomic import atomic_write_json

SWEEP = -1  # the job index of the guidance sweep
ELAPSED = "elapsed.json"  # RUNS/elapsed.json: the study's elapsed seconds in workers, over every invocation


@dataclass
class Job:
    index: int  # the task's index in settings.tasks(), or SWEEP
    name: str
    argv: list[str]


def worker_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child process that runs torch with `threads` threads."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def jobs(settings: StudySettings) -> list[Job]:
    """What is left to do, in order: the unfinished tasks, the sweep right after full's first seed."""
    base = [sys.executable, "-m", "experiments.ablate_gating", *settings.to_argv()]
    todo = []
    for i, (variant, seed) in enumerate(settings.tasks()):
        if not is_complete(settings, variant, seed):
            todo.append(Job(i, f"{variant} seed {seed}", [*base, "--task", str(i)]))
        if (variant, seed) == ("full", settings.seeds[0]) and not sweep_done(settings):
            todo.append(Job(SWEEP, "guidance sweep", [*base, "--sweep"]))
    return todo


def next_job(pending: list[Job], settings: StudySettings, running: set[int]) -> Job | None:
    """The first pending job that can start: the sweep waits for full's first seed to finish."""
    full = settings.run_dir("full", settings.seeds[0])
    full_task = settings.tasks().index(("full", settings.seeds[0])) if "full" in settings.variants else None
    for job in pending:
        if job.index != SWEEP:
            return job
        if full_task not in running and is_finished(full, settings, "full"):
            return job
    return None


def run_workers(settings: StudySettings, workers: int, poll: float = 5.0) -> list[str]:
    """Run every unfinished job in `workers` processes; -> the failures, one line each naming the log."""
    threads = worker_threads(workers)
    env = thread_env(threads)
    logs = Path(settings.runs) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending = jobs(settings)
    print(f"{len(pending)} jobs in {workers} workers of {threads} torch threads; logs in {logs}", flush=True)
    running: dict[int, tuple[Job, subprocess.Popen, Path, float]] = {}
    failures = []
    began, started = time.monotonic(), 0
    # `kill` (SIGTERM) stops the jobs too; a background shell's job ignores SIGINT
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while pending or running:
            while len(running) < workers and (job := next_job(pending, settings, set(running))):
                pending.remove(job)
                log = logs / ("sweep.log" if job.index == SWEEP else f"task-{job.index:03d}.log")
                with log.open("a") as out:
                    proc = subprocess.Popen(job.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
                running[job.index] = (job, proc, log, time.monotonic())
                started += 1
                print(f"{time.strftime('%H:%M:%S')} started {job.name} ({log})", flush=True)
            if not running:  # only the sweep is left and full's first seed failed
                failures += [
                    f"{job.name}: not run, full seed {settings.seeds[0]} did not finish" for job in pending
                ]
                break
            time.sleep(poll)
            for index, (job, proc, log, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[index]
                minutes = (time.monotonic() - start) / 60
                if proc.returncode == 0:
                    print(f"{time.strftime('%H:%M:%S')} finished {job.name} in {minutes:.1f} min", flush=True)
                else:
                    failures.append(f"{job.name}: exit status {proc.returncode}, see {log}")
                    print(f"{time.strftime('%H:%M:%S')} FAILED {failures[-1]}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for _, proc, _, _ in running.values():  # interrupted: the jobs resume next time
            proc.terminate()
        for _, proc, _, _ in running.values():
            proc.wait()
        if started:
            add_elapsed(settings, time.monotonic() - began, workers, threads)
    return failures


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def add_elapsed(settings: StudySettings, seconds: float, workers: int, threads: int) -> None:
    path = Path(settings.runs) / ELAPSED
    record = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "workers": workers}
    record.update(seconds=record["seconds"] + seconds, workers=workers, threads=threads)
    atomic_write_json(path, record, indent=1)


def read_elapsed(settings: StudySettings) -> dict | None:
    path = Path(settings.runs) / ELAPSED
    return json.loads(path.read_text()) if path.is_file() else None
