"""What every evaluator model shares: image normalisation, PIL preprocessing as the reference code runs it,
the checks of a model directory or file (a released one against its release.json)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facemogle.release import check_released

# How to get the small evaluators the synthetic set is scored with; named in every missing-model error.
MAKE_EVALUATORS = (
    "the repository ships the small synthetic ones in checkpoints/evaluators/synthetic/{parser,clip} "
    "(`git checkout -- checkpoints/evaluators` restores them); `make evaluators` rebuilds them "
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
    check_released(path)
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


def require_file(path: str | Path | None, what: str, hint: str) -> Path:
    """A file that exists, or a ValueError naming `path` and how to get it (`hint`)."""
    if path is None or str(path) == "":
        raise ValueError(f"no {what} path given; {hint}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no {what} here (the file does not exist); {hint}")
    check_released(path)
    return path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(b, 3, H, W) floats in [0, 1] -> (b, H, W, 3) uint8, rounded as an image file would store them."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (b, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """torchvision's CenterCrop on a PIL image (offsets rounded half to even, as it rounds them)."""
    top, left = round((image.height - height) / 2.0), round((image.width - width) / 2.0)
    return image.crop((left, top, left + width, top + height))


def pil_pixels(images: list[Image.Image], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB PIL images of one size -> (b, 3, H, W) float32, scaled to [0, 1] and normalised (ToTensor, Normalize)."""
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2)
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
