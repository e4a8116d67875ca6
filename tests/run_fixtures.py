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


class RecordGuidance(Callback):
    """Records the guidance values (x 1000, as FLUX embeds them) that reach the transformer's
    guidance embedding, per stage: {"train": [...], "validate": [...]}; nothing for a backbone without one."""

    def __init__(self):
        self.seen: dict[str, list[float]] = {"train": [], "validate": []}

    def on_fit_start(self, trainer, pl_module):
        def hook(module, args):
            if len(args) == 3:  # (timestep, guidance, pooled): CombinedTimestepGuidanceTextProjEmbeddings
                stage = "train" if trainer.training else "validate"
                self.seen[stage] += args[1].float().unique().tolist()

        pl_module.backbone.transformer.time_text_embed.register_forward_pre_hook(hook)


class CountCalls(Callback):
    """Counts forward calls of `pick(pl_module)` from the start of fitting (after the data is prepared)."""

    def __init__(self, pick):
        self.pick = pick
        self.calls = 0

    def on_fit_start(self, trainer, pl_module):
        self.pick(pl_module).register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))
