"""FID and KID with clean-fid's formulas (clean-fid 0.1.35, `fid.frechet_distance`, `fid.kernel_distance`),
on features from facemogle.evaluators.clean_inception.

    FID   ||mu_r - mu_g||^2 + tr(C_r + C_g - 2 sqrtm(C_r C_g)); np.cov (n - 1); scipy's sqrtm, retried with
          1e-6 added to both diagonals when it is not finite; the real part of a complex result
    KID   100 subsets of m = min(n_r, n_g, 1000) drawn without replacement from numpy's legacy global-style
          RandomState (the generated subset first, then the real one, as clean-fid draws them), the unbiased
          MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged; reported x 1000 as the paper does.
          Seed 42: the official evaluation calls seed_everything(42) before clean-fid's compute_kid. With
          n <= 1000 every subset is the whole set and the value does not depend on the seed.

Features are states (cat across ranks, in rank order); real ones survive `reset()`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

KID_SEED = 42
KID_SCALE = 1000.0


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    root = linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root  # SciPy < 1.18 may return (root, error)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )


def kernel_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, max_subset_size: int = 1000, seed: int = KID_SEED
) -> float:
    """clean-fid's kernel_distance(feats1=real, feats2=fake) under np.random.seed(seed)."""
    rng = np.random.RandomState(seed)
    d = real.shape[1]
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    total = 0.0
    for _ in range(subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / subsets / m)


class CleanFidKid(Metric):
    """update(features (b, d), real: bool); compute() -> {"fid", "kid"} (KID x kid_scale)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, kid_subsets: int = 100, kid_subset_size: int = 1000, kid_seed: int = KID_SEED,
                 kid_scale: float = KID_SCALE, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.kid_seed, self.kid_scale = kid_seed, kid_scale
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, real: bool) -> None:
        if features.dim() != 2:
            raise ValueError(f"expected features (b, d), got shape {tuple(features.shape)}")
        (self.real_features if real else self.fake_features).append(features.double())

    @property
    def num_real(self) -> int:
        state = self.real_features
        return sum(f.shape[0] for f in state) if isinstance(state, list) else state.shape[0]

    def compute(self) -> dict[str, float]:
        real = dim_zero_cat(self.real_features).cpu().numpy()
        fake = dim_zero_cat(self.fake_features).cpu().numpy()
        if min(len(real), len(fake)) < 2:
            raise RuntimeError("clean-fid's FID and KID need at least two real and two generated images")
        kid = kernel_distance(real, fake, self.kid_subsets, self.kid_subset_size, self.kid_seed)
        return {"fid": fid_from_features(real, fake), "kid": self.kid_scale * kid}

    def reset(self) -> None:
        real = list(self.real_features) if isinstance(self.real_features, list) else [self.real_features]
        super().reset()
        self.real_features = real
