"""Learning curves: mask mIoU (and FID, CLIP score) against the training step, from the step checkpoints a run
saves anyway (checkpoints/step-NNNNNN.ckpt, every trainer.checkpoint_every_n_steps).

Each checkpoint is exported as an ordinary run and evaluated like the final model, text+mask on the test
split's first n faces with the same sampler, seeds and evaluators, so a point on the curve is the final
evaluation's protocol at that step (on fewer faces), not the training loss or a validation proxy:

    RUN/curve/step-000250/export/          the step's LoRA + MoGLE (experiments.runs.io.export_run)
    RUN/curve/step-000250/eval/test.json   experiments.evaluation.run's report

A point already evaluated with these settings is kept, so an interrupted study continues.
"""

from __future__ import annotations

import re
from pathlib import Path

from experiments.config.schema import Config
from experiments.runs.io import EXPORT, export_run
from experiments.training.build import build_backbone, build_denoiser
from experiments.training.run import CHECKPOINTS
from facemogle.data_only import load_data

CURVE = "curve"
STEP_FILE = re.compile(r"step-(\d+)\.ckpt")


def checkpoint_steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of every step checkpoint of a run, by step."""
    folder = Path(run_dir) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.ckpt") if (m := STEP_FILE.fullmatch(p.name))]
    return sorted(found)


def point_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CURVE / f"step-{step:06d}"


def export_checkpoint(config: Config, checkpoint: Path, out_dir: Path) -> Path:
    """Write the trained weights of a Lightning checkpoint as `out_dir`/export, as training's export would."""
    if checkpoint.is_dir():
        raise ValueError(f"{checkpoint}: a sharded (FSDP) checkpoint; learning curves read single-file ones")
    if (out_dir / EXPORT / "manifest.json").is_file():
        return out_dir / EXPORT
    state = load_data(checkpoint, map_location="cpu")["state_dict"]
    weights = {k.removeprefix("denoiser."): v for k, v in state.items() if k.startswith("denoiser.")}
    denoiser = build_denoiser(build_backbone(config.backbone), config.model)
    return export_run(out_dir, config, denoiser, weights)
