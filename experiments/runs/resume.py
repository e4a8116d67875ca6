"""A resumed run is the run it claims to be: `--resume` compares the config it is given with the one the run
recorded (RUN_DIR/config.yaml) before anything is built.

A change of a key that defines the model (MODEL_KEYS: the architecture, the LoRA, the backbone's dtype and
the resolution the weights were trained at) is refused in one line listing each key, old -> new: the
checkpoint's weights belong to the recorded model (a changed LoRA rank would end in a size mismatch, a
changed expert kind would continue silently as another model). Every other key (trainer.max_steps, the
learning rate, the logger, the data's location) may change; each resume is appended to RUN_DIR/RESUME_LOG,
with what changed, so the run records that its later steps ran with other settings.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.config.load import load_config
from experiments.config.schema import Config
from facemogle.atomic import atomic_write_text

RECORDED = "config.yaml"
RESUME_LOG = "resume_log.jsonl"
# dotted keys, or prefixes ending in ".", whose value the trained weights depend on
MODEL_KEYS = ("model.", "backbone.dtype", "backbone.max_sequence_length", "data.resolution")


def flat(config: Config) -> dict[str, Any]:
    """{dotted key: value} of every leaf of the config."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(OmegaConf.structured(config)), "")
    return out


def defines_model(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in MODEL_KEYS)


def config_changes(recorded: Config, given: Config) -> dict[str, tuple[Any, Any]]:
    """Each key whose value differs -> (recorded, given)."""
    old, new = flat(recorded), flat(given)
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def check_resume(config: Config, checkpoints: Path) -> dict[str, tuple[Any, Any]]:
    """Raises ValueError when `config` changes a model key of the run it resumes; -> the other changes.
    A run with no checkpoint yet, or no recorded config, starts afresh and is not compared."""
    recorded_file = Path(config.run_dir) / RECORDED
    if not recorded_file.is_file() or not any(checkpoints.glob("*.ckpt")):
        return {}
    changes = config_changes(load_config(recorded_file), config)
    refused = {k: v for k, v in changes.items() if defines_model(k)}
    if refused:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ValueError(
            f"--resume: {config.run_dir} was trained as another model ({recorded_file}): {listed}; undo the "
            "change, or train it as a new run in another run_dir"
        )
    return changes


def record_resume(config: Config, checkpoint: Path | None, changes: dict[str, tuple[Any, Any]]) -> Path:
    """Appends one line to RUN_DIR/RESUME_LOG: when, from which checkpoint, and each changed key."""
    log = Path(config.run_dir) / RESUME_LOG
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "changed": {k: [old, new] for k, (old, new) in changes.items()},
    }
    before = log.read_text(encoding="utf-8") if log.is_file() else ""
    return atomic_write_text(log, before + json.dumps(entry) + "\n")
