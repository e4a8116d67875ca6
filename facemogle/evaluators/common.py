"""What every evaluator model shares: the image normalisation and the check of a model directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

# How to get the small evaluators the synthetic set is scored with; named in every missing-model error.
MAKE_EVALUATORS = (
    "`make evaluators` trains the small synthetic ones into checkpoints/evaluators/synthetic/{parser,clip} "
    "(python -m experiments.train_evaluators --config experiments/configs/evaluators_synthetic.yaml)"
)


def require_model_dir(path: str | Path | None, what: str, hint: str) -> Path:
    """A transformers model directory, or a ValueError naming `path` and how to get one (`hint`)."""
    if path is None or str(path) == "":
        raise ValueError(f"no {what} path given; {hint}")
    path = Path(path)
    if not (path / "config.json").is_file():
        missing = "does not exist" if not path.exists() else "has no config.json"
        raise ValueError(
            f"{path}: no {what} here ({missing}; expected a transformers model directory); {hint}"
        )
    return path


def normalise_images(
    images: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(b, 3, H, W) in [0, 1] -> resized to size and normalised."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (b, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    images = images.float()
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t
