"""FLUX's latent packing: 2x2 patches of VAE latents become tokens, with 3-axis rotary position ids.

    (b, c, h, w) latents  <->  (b, h/2 * w/2, 4c) tokens, token (i, j) at row-major index i * w/2 + j.
The patch order (c, 2, 2) inside a token matches diffusers' FluxPipeline so FLUX.1-dev weights apply.
"""

from __future__ import annotations

import torch


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    *lead, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even to pack 2x2 patches, got {h}x{w}")
    x = latents.reshape(-1, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(*lead, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """tokens (..., l, 4c) -> latents (..., c, height, width); height, width in latent pixels."""
    *lead, l, d = tokens.shape
    c = d // 4
    x = tokens.reshape(-1, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(*lead, c, height, width)


def image_ids(height: int, width: int, device=None, dtype=torch.float32, index: float = 0.0) -> torch.Tensor:
    """(h/2 * w/2, 3) position ids [index, row, col] of packed tokens for a latent of height x width."""
    rows = torch.arange(height // 2, device=device, dtype=dtype)
    cols = torch.arange(width // 2, device=device, dtype=dtype)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    return torch.cat([torch.full_like(grid[:, :1], index), grid], dim=-1)
