"""Write the run's export (LoRA, MoGLE, config; see experiments/run_io.py) when training ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L


class ExportCallback(L.Callback):
    def __init__(self, export: Callable[[L.LightningModule], Path]):
        self.export = export

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.export(pl_module)
