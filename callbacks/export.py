"""Write the run's export (LoRA, MoGLE, config; see experiments/runs/io.py) when training ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from facemogle.denoiser import Denoiser
from facemogle.sharding import trainable_state_dict


class ExportCallback(L.Callback):
    """export(denoiser, weights): `weights` are the denoiser's trainable weights and MoGLE buffers as whole
    tensors. Under FSDP each rank holds a shard of them, so every rank takes part in gathering them."""

    def __init__(self, export: Callable[[Denoiser, dict[str, torch.Tensor]], Path]):
        self.export = export

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = trainable_state_dict(pl_module.denoiser)
        if trainer.is_global_zero:
            self.export(pl_module.denoiser, weights)
