"""Where a results table comes from: the code's commit, the backbone's bytes, the machine, and the time.

The backbone's sha256 is over its files (relative path and content, in path order), so a copy of the same
directory gives the same digest. The study's compute time is the sum of the seconds its runs recorded for each
stage (training, evaluation, probe, learning curve, guidance sweep): the work itself, on this machine,
however many times the study was stopped and resumed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from experiments.ablation.study import TIMING, StudySettings
from experiments.evaluation.protocol import git_commit as code_commit


def git_commit(out: str | Path | None = None) -> str:
    """The commit of the code that ran, with "+ uncommitted changes" when tracked files outside the
    results directory `out` differ from it; "unknown" outside a git checkout."""
    record = code_commit(exclude=out)
    if record["commit"] is None:
        return "unknown"
    return record["commit"] + (" + uncommitted changes" if record["dirty"] else "")


def directory_sha256(path: str | Path) -> str:
    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def study_seconds(settings: StudySettings) -> dict[str, float]:
    """Seconds per stage summed over the study's runs, and their total."""
    totals: dict[str, float] = {}
    for variant, seed in settings.tasks():
        path = settings.run_dir(variant, seed) / TIMING
        if path.is_file():
            for stage, seconds in json.loads(path.read_text()).items():
                totals[stage] = totals.get(stage, 0.0) + seconds
    totals["total"] = sum(totals.values())
    return totals


def hours_minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"
