"""Rectified flow (flow matching): x_t = (1 - t) x_0 + t noise, the model predicts noise - x_0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class TimestepSampling:
    kind: Literal["logit_normal", "uniform"] = "logit_normal"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("logit_normal", "uniform"):
            raise ValueError(f"timesteps.kind={self.kind!r}: expected 'logit_normal' or 'uniform'")

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.rand(n, device=device, generator=generator)
        z = torch.randn(n, device=device, generator=generator) * self.std + self.mean
        return torch.sigmoid(z)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0
