"""Released sets: the fixed parts of the embedded default the repository ships (the pretrained tiny backbone,
the evaluators), so every user measures with the same instruments.

A released set is a folder holding `release.json`: each shipped file's sha256 (relative path), the commit and
command that made the set, the machine, and the set's own metrics (stage 1's losses, the parser's mIoU, the
CLIP's retrieval). Loading any file or folder inside a set checks the files it reads against the record
(`check_released`): a changed or truncated file, or a Git LFS pointer left by a clone without LFS, is an error
naming it, not a model that measures something else. `compare` says whether a rebuilt set equals the shipped
one and, when it does not, which files differ and how far the metrics moved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facemogle.atomic import atomic_write_json

RELEASE = "release.json"
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (manifests, released sets, the evaluation protocol's model record)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_release(path: str | Path) -> Path | None:
    """The release.json of the released set holding `path` (it or a folder above it), or None."""
    start = Path(path).resolve()
    for folder in [start, *start.parents] if start.is_dir() else list(start.parents):
        if (folder / RELEASE).is_file():
            return folder / RELEASE
    return None


def check_released(path: str | Path) -> None:
    """The released files at or under `path` are the recorded ones; a path outside any set passes."""
    release = find_release(path)
    if release is None:
        return
    root, target = release.parent, Path(path).resolve()
    for name, digest in read_release(release)["files"].items():
        file = root / name
        resolved = file.resolve()
        if resolved != target and target not in resolved.parents:
            continue
        if not file.is_file():
            raise ValueError(f"{file} is missing from the released set {root} ({release} lists it)")
        with open(file, "rb") as f:
            if f.read(len(LFS_POINTER)) == LFS_POINTER:
                raise ValueError(f"{file} is a Git LFS pointer, not the released file: run `git lfs pull`")
        if sha256(file) != digest:
            raise ValueError(
                f"{file} is not the released file ({release} records another sha256): restore it with "
                f"`git checkout -- {file}`, or point the config at a set of your own"
            )


def read_release(release: str | Path) -> dict:
    try:
        record = json.loads(Path(release).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{release} is not a readable release record: {e}") from e
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise ValueError(f"{release} is not a release record: it has no 'files' table")
    return record


def released_files(root: Path, parts: list[str]) -> list[Path]:
    """The files of `parts` (files or folders relative to root), sorted; the record itself aside."""
    found = []
    for part in parts:
        path = root / part
        if not path.exists():
            raise ValueError(f"{path} does not exist: nothing to release")
        found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return sorted(p for p in found if p.name != RELEASE)


def numeric_leaves(values: Any, prefix: str = "") -> dict[str, float]:
    """{dotted key: number} for every number in a JSON tree, timings (keys holding 'seconds') aside."""
    if isinstance(values, dict):
        out = {}
        for key, value in values.items():
            if "seconds" not in str(key):
                out.update(numeric_leaves(value, f"{prefix}{key}."))
        return out
    if isinstance(values, bool) or not isinstance(values, int | float):
        return {}
    return {prefix.rstrip("."): float(values)}


def machine() -> dict[str, Any]:
    """The CPU, cores, threads and versions a set or a study was made with."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def set_metrics(path: Path, sections: list[str] | None) -> dict[str, float]:
    """The numbers of the JSON file `path`, only its top-level `sections` when given."""
    values = json.loads(path.read_text(encoding="utf-8"))
    if sections:
        values = {key: values[key] for key in sections if key in values}
    return numeric_leaves(values)


def write_release(
    root: str | Path,
    parts: list[str],
    command: str,
    metrics_file: str | None,
    sections: list[str] | None = None,
    commit: str | None = None,
) -> Path:
    """Record `parts` of the set at `root` (files or folders relative to it) in root/release.json, with the
    metrics of `metrics_file` (a JSON file under root; only its top-level `sections` when given). -> the
    record. `commit`: the commit whose code made the set (default: the checkout's HEAD)."""
    root = Path(root)
    files = released_files(root, parts)
    metrics = set_metrics(root / metrics_file, sections) if metrics_file is not None else {}
    record = {
        "files": {str(p.relative_to(root)): sha256(p) for p in files},
        "bytes": sum(p.stat().st_size for p in files),
        "commit": commit or git_commit(root),
        "command": command,
        "machine": machine(),
        "metrics_file": metrics_file,
        "metric_sections": sections,
        "metrics": metrics,
    }
    atomic_write_json(root / RELEASE, record, indent=2)
    return root / RELEASE


@dataclass
class Comparison:
    identical: list[str]
    differ: list[str]
    missing: list[str]  # released files the rebuilt set lacks
    metrics: dict[str, tuple[float, float | None]]  # key -> (shipped, rebuilt)

    @property
    def equal(self) -> bool:
        return not self.differ and not self.missing

    def summary(self, shipped: Path, rebuilt: Path) -> str:
        if self.equal:
            return f"{rebuilt} equals the released set {shipped}: {len(self.identical)} files, every sha256 the same"
        lines = [
            f"{rebuilt} differs from the released set {shipped}: {len(self.differ)} of "
            f"{len(self.identical) + len(self.differ) + len(self.missing)} files differ"
            + (f", {len(self.missing)} missing" if self.missing else ""),
            *(f"  differs: {name}" for name in self.differ),
            *(f"  missing: {name}" for name in self.missing),
        ]
        for key, (old, new) in self.metrics.items():
            moved = "not measured" if new is None else f"{new:.6g} ({_relative(old, new)})"
            lines.append(f"  {key}: released {old:.6g}, rebuilt {moved}")
        return "\n".join(lines)


def _relative(old: float, new: float) -> str:
    if old == 0 or not math.isfinite(old):
        return f"{new - old:+.3g}"
    return f"{(new - old) / abs(old):+.2%}"


def compare(shipped: str | Path, rebuilt: str | Path) -> Comparison:
    """The rebuilt set's files and metrics against the released set's record."""
    shipped, rebuilt = Path(shipped), Path(rebuilt)
    record = read_release(shipped / RELEASE)
    identical, differ, missing = [], [], []
    for name, digest in record["files"].items():
        file = rebuilt / name
        if not file.is_file():
            missing.append(name)
        else:
            (identical if sha256(file) == digest else differ).append(name)
    metrics: dict[str, tuple[float, float | None]] = {}
    if record.get("metrics_file"):
        path = rebuilt / record["metrics_file"]
        new = set_metrics(path, record.get("metric_sections")) if path.is_file() else {}
        metrics = {key: (old, new.get(key)) for key, old in record["metrics"].items()}
    return Comparison(identical, differ, missing, metrics)
