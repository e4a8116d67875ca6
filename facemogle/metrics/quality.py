"""FID and KID from torchmetrics on features computed once per image by a shared extractor.

torchmetrics' FrechetInceptionDistance / KernelInceptionDistance accept any `nn.Module` as `feature`;
here that module is `PrecomputedFeatures` (the identity), and `update` receives (b, d) features. One
extractor (Inception, or the small CLIP's image tower for the synthetic set) then serves FID and KID,
and real-image features can be computed once per data set and cached.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat


class PrecomputedFeatures(nn.Module):
    """The identity, declaring the feature width torchmetrics needs (`num_features`)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (b, d) -> (b, d)
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features (b, {self.num_features}), got shape {tuple(features.shape)}")
        return features


class FeatureFID(FrechetInceptionDistance):
    """FID whose `update(features (b, d), real)` takes extracted features; real statistics survive `reset()`."""

    def __init__(self, num_features: int, **kwargs):
        super().__init__(feature=PrecomputedFeatures(num_features), reset_real_features=False, **kwargs)

    @property
    def num_real(self) -> int:
        return int(self.real_features_num_samples)


class FeatureKID(KernelInceptionDistance):
    """KID on extracted features. The subset size is capped at the number of samples, and subsets are
    drawn with a fixed seed, so the value is reproducible (and equal across DDP and one process)."""

    def __init__(
        self, num_features: int, subsets: int = 100, subset_size: int = 1000, seed: int = 0, **kwargs
    ):
        super().__init__(
            feature=PrecomputedFeatures(num_features),
            subsets=subsets,
            subset_size=subset_size,
            reset_real_features=False,
            **kwargs,
        )
        self.seed = seed

    @property
    def num_real(self) -> int:
        state = self.real_features
        return sum(f.shape[0] for f in state) if isinstance(state, list) else state.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(dim_zero_cat(self.real_features).shape[0], dim_zero_cat(self.fake_features).shape[0])
        if n < 2:
            raise RuntimeError("KID needs at least two real and two generated samples")
        configured = self.subset_size
        self.subset_size = min(configured, n)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                return super().compute()
        finally:
            self.subset_size = configured
