"""Whether a stored evaluation (experiments.evaluation.run's SPLIT.json) or probe (experiments.ablation.probe's
probe.json) was made with given settings, so a resumed study redoes only what is missing or stale."""

from __future__ import annotations

import json
from pathlib import Path


def _matches(modes: dict, meta: dict, wanted: tuple[str, ...], n: int | None, sample: dict) -> bool:
    return (
        all(mode in modes for mode in wanted)
        and n in (None, meta["n"])
        and all(meta["sample"].get(k) == v for k, v in sample.items())
    )


def evaluated(path: Path, modes: tuple[str, ...], n: int | None, sample: dict) -> bool:
    """The evaluation at `path` holds these modes, for n faces (None: any) and these sampling settings."""
    if not path.is_file():
        return False
    report = json.loads(path.read_text())
    return _matches(report, report["meta"], modes, n, sample)


def probed(path: Path, modes: tuple[str, ...], n: int | None, sample: dict) -> bool:
    """The probe at `path` holds these modes, for n faces (None: any) and these sampling settings."""
    if not path.is_file():
        return False
    probe = json.loads(path.read_text())
    return _matches(probe["modes"], probe, modes, n, sample)
