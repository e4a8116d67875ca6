"""Checkpoints that survive a full disk and a crash, and the choice of the one to resume from.

Lightning's own file writer saves to a temporary file elsewhere and moves it into place, which across
filesystems is a copy: a disk that fills up mid-copy leaves a truncated `last.ckpt`. `AtomicCheckpointIO`
writes through facemogle.atomic instead (a temporary in the checkpoint folder, flushed, renamed), so a
checkpoint file that exists is complete; FSDP's sharded folders get the same guarantee from
`experiments.strategy.FSDP2Strategy`.

`newest_checkpoint` picks, among every checkpoint of a run (last.ckpt, requeue.ckpt, step-NNNNNN.ckpt;
files, or folders of shards), the one with the highest training step that loads, and logs each one it
skipped and why: a run killed between two writes resumes from whichever is newest.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.distributed.checkpoint import FileSystemReader

from facemogle.atomic import atomic_write

log = logging.getLogger(__name__)

# what a truncated, emptied or overwritten checkpoint raises when read
UNREADABLE = (
    OSError,
    EOFError,
    RuntimeError,
    KeyError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint holds; raises one of UNREADABLE when it does not load."""
    if path.is_dir():  # FSDP: shards with their .metadata, and rank 0's meta.pt
        FileSystemReader(path).read_metadata()
        meta = torch.load(path / _METADATA_FILENAME, map_location="cpu", weights_only=False)
    else:
        meta = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(meta["global_step"])


def newest_checkpoint(folder: Path) -> Path | None:
    """The loadable checkpoint with the highest step in `folder` (the later written on a tie), or None."""
    found = []
    for path in sorted(folder.glob("*.ckpt")) if folder.is_dir() else []:
        try:
            step = checkpoint_step(path)
        except UNREADABLE as e:
            log.warning("resume: skipping %s, which does not load (%s: %s)", path, type(e).__name__, e)
            continue
        found.append((step, path.stat().st_mtime_ns, path))
    if not found:
        return None
    step, _, path = max(found)
    log.info("resume: from %s (step %d)", path, step)
    return path


class FinalLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt also holds the final step. Lightning writes `last` only on the
    every-N-steps schedule (its own end-of-training save is skipped once any `last` exists), so with
    max_steps not a multiple of N the final steps would be in no checkpoint."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
