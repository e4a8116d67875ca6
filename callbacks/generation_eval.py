"""Generation metrics during training: a Lightning callback that samples a fixed validation subset with
fixed seeds and logs FID, KID, CMMD, CLIP score and mask consistency, plus sample grids and gate maps.

What it needs (structural, no base class):
    pl_module.generate(prompts: list[str] | None, masks: Tensor | None, seed: int) -> SampleOutput
        item i of a call is sampled from noise seed + i (facemogle.sampling.sample does this), so
        an item's sample does not depend on the batch or the rank it lands in;
    the subset: facemogle.faces.Faces passed to the callback, or trainer.datamodule.eval_subset() -> Faces.

DDP: each rank samples a contiguous share of the subset; metric states sync in compute(), so every
rank gets the single-process value. Logged by every rank (same value), images by rank zero.

The text mode's condition (SampleOutput.text_only_condition: an all-background mask or none) goes to the
loggers' hyperparameters as `PREFIX/text/text_only_condition`, beside the metrics it qualifies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from callbacks.visuals import gate_map, sample_grid
from facemogle.faces import Faces
from facemogle.gate_analysis import region_gate_weights
from facemogle.metrics.suite import GenerationMetrics
from facemogle.rules import AT_LEAST_ONE, NON_NEGATIVE, Range, check_ranges
from facemogle.sampling import SampleOutput, check_modes, mode_inputs
from facemogle.sharding import is_sharded


@runtime_checkable
class Generator(Protocol):
    def generate(self, prompts: list[str] | None, masks: torch.Tensor | None, seed: int) -> SampleOutput: ...


@runtime_checkable
class EvalSubsetSource(Protocol):
    def eval_subset(self) -> Faces: ...


@dataclass
class GenerationEvalConfig:
    every_n_steps: int = 0  # 0: only at validation
    on_validation: bool = True
    modes: tuple[str, ...] = ("text+mask",)
    batch_size: int = 8
    seed: int = 0
    num_grid: int = 4  # samples in the logged grid (0: none)
    gate_maps: int = 2  # samples whose gate maps are logged (0: none)
    prefix: str = "eval"

    RULES: ClassVar[dict[str, Range]] = {"every_n_steps": NON_NEGATIVE, "batch_size": AT_LEAST_ONE}

    def __post_init__(self) -> None:
        self.modes = check_modes(self.modes, "eval.callback.modes")
        check_ranges(self)


def share(n: int, rank: int, world_size: int) -> range:
    """Contiguous slice of 0..n-1 for a rank; rank order is item order, as DDP gathers it."""
    bounds = np.linspace(0, n, world_size + 1).round().astype(int)
    return range(int(bounds[rank]), int(bounds[rank + 1]))


@dataclass
class ModeResult:
    metrics: dict[str, float]
    shown: SampleOutput | None = None  # the first batch of rank zero, for pictures
    shown_range: range = field(default_factory=lambda: range(0))
    text_only_condition: str | None = None  # what stood in for the mask, in text mode


class GenerationEvaluator(L.Callback):
    """metrics: a GenerationMetrics, or a function building one (called once, at setup)."""

    def __init__(
        self,
        metrics: GenerationMetrics | Callable[[], GenerationMetrics],
        config: GenerationEvalConfig | None = None,
        subset: Faces | None = None,
    ):
        self.config = config or GenerationEvalConfig()
        self._metrics_or_factory = metrics
        self.metrics: GenerationMetrics | None = metrics if isinstance(metrics, GenerationMetrics) else None
        self.subset = subset
        self.last: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------------------------------ hooks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Generator):
            raise ValueError(
                f"{type(pl_module).__name__} has no generate(prompts, masks, seed); GenerationEvaluator needs it"
            )
        if self.metrics is None:
            self.metrics = self._metrics_or_factory()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.config.every_n_steps
        if n and trainer.global_step % n == 0:
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.config.on_validation and not trainer.sanity_checking:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------------------------------- work

    def _subset(self, trainer: L.Trainer) -> Faces:
        if self.subset is None:
            source = getattr(trainer, "datamodule", None)
            if not isinstance(source, EvalSubsetSource):
                raise ValueError("GenerationEvaluator needs a subset, or a datamodule with eval_subset()")
            self.subset = source.eval_subset()
        return self.subset

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict[str, float]]:
        subset = self._subset(trainer)
        if len(subset) < max(2, trainer.world_size):
            raise ValueError(f"eval subset of {len(subset)} faces: need at least 2 and one per rank")
        if is_sharded(pl_module):
            self._check_lockstep(len(subset), trainer.world_size)
        mine = share(len(subset), trainer.global_rank, trainer.world_size)
        metrics = self.metrics.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            # validation runs under inference mode; metric states must stay ordinary tensors
            with torch.inference_mode(False), torch.no_grad():
                if metrics.num_real == 0:
                    self._add_real(metrics, subset, mine, pl_module.device)
                results = {
                    mode: self._run_mode(metrics, pl_module, subset, mine, mode) for mode in self.config.modes
                }
        finally:
            pl_module.train(was_training)
        prefix = self.config.prefix
        for mode, result in results.items():
            values = {f"{prefix}/{mode}/{k}": v for k, v in result.metrics.items()}
            pl_module.log_dict(values, sync_dist=False)
            if trainer.is_global_zero and result.shown is not None:
                self._log_pictures(trainer, subset, mode, result)
            if trainer.is_global_zero and result.text_only_condition is not None:
                log_settings(trainer, {f"{prefix}/{mode}/text_only_condition": result.text_only_condition})
        self.last = {mode: r.metrics for mode, r in results.items()}
        return self.last

    def _check_lockstep(self, n: int, world_size: int) -> None:
        """A sharded model (FSDP) samples in lockstep: every rank must run as many batches."""
        counts = {len(self._batches(share(n, rank, world_size))) for rank in range(world_size)}
        if len(counts) > 1:
            raise ValueError(
                f"data.eval_subset_size={n} gives the {world_size} ranks {sorted(counts)} batches of "
                f"eval.callback.batch_size={self.config.batch_size}; trainer.strategy=fsdp needs as many on every rank"
            )

    def _batches(self, indices: range) -> list[range]:
        b = self.config.batch_size
        return [indices[i : i + b] for i in range(0, len(indices), b)]

    def _add_real(self, metrics: GenerationMetrics, subset: Faces, mine: range, device) -> None:
        for part in self._batches(mine):
            metrics.update_real(subset[part].images.to(device))

    def _run_mode(self, metrics, pl_module, subset: Faces, mine: range, mode: str) -> ModeResult:
        metrics.reset()
        result = ModeResult({})
        for part in self._batches(mine):
            faces = subset[part]
            labels = faces.labels.to(pl_module.device)
            out = pl_module.generate(
                *mode_inputs(mode, faces.captions, labels), seed=self.config.seed + part.start
            )
            metrics.update(out.images, faces.captions, labels)
            if result.shown is None:
                result.shown, result.shown_range = out, part
                result.text_only_condition = out.text_only_condition
        result.metrics = metrics.compute()
        return result

    def _log_pictures(self, trainer: L.Trainer, subset: Faces, mode: str, result: ModeResult) -> None:
        part, out = result.shown_range, result.shown
        k = min(self.config.num_grid, len(part))
        key = f"{self.config.prefix}/{mode}"
        shown = subset[part]
        prompts, masks = mode_inputs(mode, shown.captions, shown.labels)
        if k:
            captions = prompts[:k] if prompts is not None else None
            grid = sample_grid(shown.labels[:k], out.images[:k], shown.images[:k], captions)
            log_images(trainer, f"{key}/samples", [grid])
        g = min(self.config.gate_maps, len(part))
        if g and out.gate_weights and masks is not None:  # text mode's gate saw no mask of these faces
            regions = region_gate_weights([w[:g] for w in out.gate_weights], masks[:g])
            log_images(trainer, f"{key}/gate_maps", [gate_map(regions[i], out.sigmas) for i in range(g)])


def log_settings(trainer: L.Trainer, settings: dict[str, str]) -> None:
    """Settings that qualify logged metrics, as every logger's hyperparameters."""
    for logger in trainer.loggers:
        logger.log_hyperparams(settings)


def log_images(trainer: L.Trainer, key: str, images: list[np.ndarray]) -> None:
    """(H, W, 3) uint8 images to every logger: W&B and TensorBoard natively, others as PNGs in their log_dir."""
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=images, step=step)
        elif isinstance(logger, TensorBoardLogger):
            for i, image in enumerate(images):
                logger.experiment.add_image(f"{key}/{i}", image, step, dataformats="HWC")
        else:
            folder = Path(logger.log_dir or trainer.default_root_dir) / "images"
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image).save(folder / f"{key.replace('/', '_')}_step{step:06d}_{i}.png")
