"""The mean of a per-image score (the paper's CLIP text score, ImageReward): sum and count states, so the
value does not depend on batching and DDP (sum-reduce) gives the single-process value."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MeanScore(Metric):
    """update(scores (b,)); compute() -> their mean over every image seen."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor) -> None:
        if scores.dim() != 1:
            raise ValueError(f"expected one score per image (b,), got shape {tuple(scores.shape)}")
        self.score_sum += scores.double().sum()
        self.images += scores.numel()

    def compute(self) -> torch.Tensor:
        if int(self.images) < 1:
            raise RuntimeError("no scores to average")
        return self.score_sum / self.images
