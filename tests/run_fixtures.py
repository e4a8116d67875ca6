"""Pieces the training tests share: a small run workspace, its run config, small evaluators, and callbacks
that kill a run mid-way or record what reached the model, and a two-process launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning import Callback

from data_modules.synthetic import write_synthetic
from experiments.config.load import load_config, to_yaml
from experiments.config.schema import Config
from facemogle.backbone import save_flux
from facemogle.evaluators import SmallParserConfig, build_small_parser, save_clip, save_face_parser
from facemogle.tiny_backbone import tiny_flux
from tests.test_eval_metrics import tiny_clip

REPO = Path(__file__).resolve().parents[1]


def write_workspace(root: Path) -> Path:
    """root/data: 24 synthetic faces at 32^2; root/flux: a saved tiny FLUX (seed 0); root/cache for latents."""
    write_synthetic(root / "data", 24, 32, 0)
    save_flux(tiny_flux(seed=0), root / "flux")
    return root


def write_evaluators(root: Path) -> Path:
    """root/clip and root/parser: a tiny CLIP and a small SegFormer parser, untrained."""
    parser = build_small_parser(SmallParserConfig(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1]))
    save_face_parser(parser, root / "parser")
    save_clip(tiny_clip(), root / "clip")
    return root


def tiny_config(workspace: Path, run_dir: Path, steps: int, *extra: str) -> Config:
    """experiments/configs/tiny.yaml on the workspace: 32^2, batch 4, `steps` steps, checkpoints every 3, a
    CSV log of every step, no generation metrics; `extra` key=value overrides last."""
    return load_config(
        "experiments/configs/tiny.yaml",
        [
            f"run_dir={run_dir}",
            f"backbone.path={workspace / 'flux'}",
            f"data.root={workspace / 'data'}",
            f"data.cache_dir={workspace / 'cache'}",
            "data.resolution=32",
            "data.batch_size=4",
            f"trainer.max_steps={steps}",
            "trainer.checkpoint_every_n_steps=3",
            "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false",
            "logger.kind=csv",
            "eval.enabled=false",
            *extra,
        ],
    )


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


def launch(cfg, out: Path, *flags: str) -> subprocess.CompletedProcess:
    """Writes cfg to OUT/config.yaml and runs `python -m tests.fsdp_worker` on it (trainer.devices=2: Lightning
    starts the second rank), which leaves each rank's record in OUT/rankN.pt."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    return subprocess.run(
        [sys.executable, "-m", "tests.fsdp_worker", str(out / "config.yaml"), str(out), *flags],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def records(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
