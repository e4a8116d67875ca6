"""Pieces the training tests share: a small run workspace and a callback that kills a run mid-way."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback

from data_modules.synthetic import write_synthetic
from facemogle.backbone import save_flux, tiny_flux


def write_workspace(root: Path) -> Path:
    """root/data: 24 synthetic faces at 32^2; root/flux: a saved tiny FLUX (seed 0)."""
    write_synthetic(root / "data", 24, 32, 0)
    save_flux(tiny_flux(seed=0), root / "flux")
    return root


class KillAt(Callback):
    """Raises RuntimeError("killed") when training reaches `step`, as a killed process would stop."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")
