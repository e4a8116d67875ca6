"""Checkpoints that survive a full disk and a crash, and a last.ckpt that holds the final step.

Lightning's own file writer saves to a temporary file elsewhere and moves it into place, which across
filesystems is a copy: a disk that fills up mid-copy leaves a truncated `last.ckpt`. `AtomicCheckpointIO`
writes through facemogle.atomic instead (a temporary in the checkpoint folder, flushed, renamed), so a
checkpoint file that exists is complete; FSDP's sharded folders get the same guarantee from
`experiments.training.strategy.FSDP2Strategy`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from facemogle.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class FinalLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt also holds the final step. Lightning writes `last` only on the
    every-N-steps schedule (its own end-of-training save is skipped once any `last` exists), so with
    max_steps not a multiple of N the final steps would be in no checkpoint."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
