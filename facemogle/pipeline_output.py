"""What FaceMoGLEPipeline returns, and its images in the output types it offers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class FaceMoGLEPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor  # PIL, (b, H, W, 3), (b, 3, H, W); in [0, 1]
    gate_weights: torch.Tensor | None  # (b, steps, l, e) MoGLE's weights; None without condition tokens
    region_gate: torch.Tensor | None  # (b, steps, 19, e) their mean over each region's tokens (masks given)
    labels: torch.Tensor | None  # (b, H, W) the label maps the faces were conditioned on
    sigmas: torch.Tensor  # (steps,) the noise levels visited
    text_only_condition: str | None = None  # text-to-face: what stood in for the mask


def postprocess(images: torch.Tensor, output_type: str):
    """(b, 3, H, W) in [0, 1] -> the output type; 8-bit as experiments.sample has always written them."""
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).float().cpu().numpy()
    return array if output_type == "np" else DiffusionPipeline.numpy_to_pil(array)
