"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): squared maximum mean discrepancy between the CLIP
image embeddings of real and generated images, with a Gaussian kernel.

    k(x, y) = exp(-||x - y||^2 / (2 sigma^2)),  sigma = 10, embeddings L2-normalised
    CMMD = scale * (mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)),  scale = 1000

Means run over all pairs, diagonals included (the published estimator), so identical sets give 0 and
the value does not depend on the order of the samples (DDP gathers them rank by rank).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, sigma: float = CMMD_SIGMA) -> torch.Tensor:
    """x: (n, d), y: (m, d) -> squared MMD (biased estimator) with a Gaussian kernel, in float64."""
    x, y = x.double(), y.double()
    gamma = 1.0 / (2.0 * sigma**2)

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T  # (n, m)
        return torch.exp(-gamma * sq.clamp_min(0)).mean()

    return mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y)


class CMMD(Metric):
    """update(embeddings (b, d), real: bool) with CLIP image embeddings (normalised here); compute() -> CMMD.

    Real embeddings survive `reset()` unless `reset_real_features`, so they are computed once per data set.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        sigma: float = CMMD_SIGMA,
        scale: float = CMMD_SCALE,
        reset_real_features: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma, self.scale = sigma, scale
        self.reset_real_features = reset_real_features
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, real: bool) -> None:
        if embeddings.dim() != 2:
            raise ValueError(f"expected embeddings (b, d), got shape {tuple(embeddings.shape)}")
        normed = F.normalize(embeddings.double(), dim=-1)
        (self.real_features if real else self.fake_features).append(normed)

    @property
    def num_real(self) -> int:
        return _count(self.real_features)

    def compute(self) -> torch.Tensor:
        if _count(self.real_features) < 1 or _count(self.fake_features) < 1:
            raise RuntimeError("CMMD needs at least one real and one generated embedding")
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        return self.scale * gaussian_mmd2(real, fake, self.sigma)

    def reset(self) -> None:
        real = list(self.real_features) if isinstance(self.real_features, list) else [self.real_features]
        super().reset()
        if not self.reset_real_features:
            self.real_features = real


def _count(state: list[torch.Tensor] | torch.Tensor) -> int:
    """Rows in a list state (before sync) or in its concatenation (after sync)."""
    return sum(f.shape[0] for f in state) if isinstance(state, list) else state.shape[0]
