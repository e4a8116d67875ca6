"""Splice's DINO structure distance between each generated image and its real face: Face-MoGLE's Mask column.

Per image pair (generated g, real r), with S(x) the key self-similarity of facemogle.evaluators.dino:
    d = mean over the t x t entries of (S(g) - S(r))^2        (F.mse_loss, as the official code)
Two figures:
    per_image        mean of d over images: independent of batching (and of DDP's split)
    official         what src/eval/eval_mask.py reports: it sums d over each batch of `official_batch`
                     (64) pairs and averages those sums over the batches, i.e. sum(d) / ceil(n / 64); about
                     64 x per_image, and it changes with n mod 64. Use it only to set a number beside the paper's.
States are sums (DDP sum-reduce), so two ranks give the single-process values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

OFFICIAL_BATCH = 64  # eval_mask.py's DataLoader batch


class DinoStructureDistance(Metric):
    """update(generated, real) with (b, 3, H, W) images in [0, 1], pair i from the same face;
    compute() -> {"per_image", "official"}. `dino` is a facemogle.evaluators.dino.DinoKeys."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, dino, official_batch: int = OFFICIAL_BATCH, **kwargs):
        super().__init__(**kwargs)
        if official_batch < 1:
            raise ValueError(f"official_batch must be positive, got {official_batch}")
        self.dino, self.official_batch = dino, official_batch
        self.add_state("distance_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def distances(self, generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(b,) per-pair distances d (float32, as the official code computes them)."""
        if generated.shape != real.shape:
            raise ValueError(
                f"generated and real images must match, got {tuple(generated.shape)} and {tuple(real.shape)}"
            )
        fake_sim, real_sim = self.dino(generated), self.dino(real)  # (b, t, t) each
        return F.mse_loss(fake_sim, real_sim, reduction="none").flatten(1).mean(1)

    def update(self, generated: torch.Tensor, real: torch.Tensor) -> None:
        d = self.distances(generated, real)
        self.distance_sum += d.double().sum()
        self.images += d.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = int(self.images)
        if n < 1:
            raise RuntimeError("the structure distance needs at least one image pair")
        return {
            "per_image": self.distance_sum / n,
            "official": self.distance_sum / math.ceil(n / self.official_batch),
        }
