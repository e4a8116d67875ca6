"""Pictures for the logger: sample grids (mask | generated | real, caption) and MoGLE gate maps.

Gate map of one sample: one panel per chosen sampling step, each a (regions x experts) heatmap of the
mean gate weight the image tokens of a face region give each expert (regions: parts present in the
input mask, read at the token grid by facemogle.gate_analysis). Pure functions of tensors -> uint8
arrays (H, W, 3).
"""

from __future__ import annotations

import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from facemogle.face_parts import NUM_PARTS, PARTS, colorize

CAPTION_CHARS_PER_TILE = 10  # characters per line, per 64 px of row width
CELL = 8  # heatmap cell size in pixels
HEAT_ANCHORS = np.array([[20, 20, 70], [40, 140, 140], [250, 230, 40]], dtype=np.float64)  # low, mid, high


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) in [0, 1] -> (n, H, W, 3) uint8."""
    return (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _text_strip(text: str, width: int) -> np.ndarray:
    font = ImageFont.load_default()
    chars = max(8, width * CAPTION_CHARS_PER_TILE // 64)
    lines = textwrap.wrap(text, chars)[:4] or [""]
    line_height = 12
    strip = Image.new("RGB", (width, line_height * len(lines) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((2, 2 + i * line_height), line, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def sample_grid(
    labels: torch.Tensor, generated: torch.Tensor, real: torch.Tensor, captions: list[str] | None
) -> np.ndarray:
    """labels (n, H, W); generated, real (n, 3, H, W) in [0, 1] -> one image, a row per sample:
    mask | generated | real, with the caption under it."""
    h, w = generated.shape[-2:]
    masks = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long().cpu().numpy()
    real = (
        F.interpolate(real.float(), size=(h, w), mode="bilinear", align_corners=False)
        if real.shape[-2:] != (h, w)
        else real
    )
    gen, ref = to_uint8(generated), to_uint8(real)
    rows = []
    for i in range(len(gen)):
        row = np.concatenate([colorize(masks[i]), gen[i], ref[i]], axis=1)
        if captions is not None:
            row = np.concatenate([row, _text_strip(captions[i], row.shape[1])], axis=0)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    return np.concatenate(
        [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    )


def heat_colors(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] (any shape) -> uint8 RGB along HEAT_ANCHORS."""
    x = np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * (len(HEAT_ANCHORS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(HEAT_ANCHORS) - 2)
    t = (x - lo)[..., None]
    return ((1 - t) * HEAT_ANCHORS[lo] + t * HEAT_ANCHORS[lo + 1]).round().astype(np.uint8)


def gate_map(region_weights: torch.Tensor, sigmas: torch.Tensor, panels: int = 4) -> np.ndarray:
    """region_weights (steps, 19, e) of one sample -> panels at evenly spaced steps, each a
    (regions present x experts) heatmap scaled to its own maximum, titled with the noise level."""
    steps = region_weights.shape[0]
    chosen = sorted({int(round(i)) for i in np.linspace(0, steps - 1, min(panels, steps))})
    present = [p for p in range(NUM_PARTS) if not torch.isnan(region_weights[0, p]).all()]
    font = ImageFont.load_default()
    label_w, title_h = 52, 14
    tiles = []
    for k, s in enumerate(chosen):
        block = region_weights[s, present].cpu().numpy()  # (r, e)
        heat = heat_colors(block / max(float(np.nanmax(block)), 1e-8)).repeat(CELL, 0).repeat(CELL, 1)
        left = label_w if k == 0 else 4
        panel = Image.new("RGB", (left + heat.shape[1] + 4, title_h + heat.shape[0]), (255, 255, 255))
        panel.paste(Image.fromarray(heat), (left, title_h))
        draw = ImageDraw.Draw(panel)
        draw.text((left, 1), f"sigma {float(sigmas[s]):.2f}", fill=(0, 0, 0), font=font)
        if k == 0:
            for r, p in enumerate(present):
                draw.text((1, title_h + r * CELL - 2), PARTS[p][:8], fill=(0, 0, 0), font=font)
        tiles.append(np.asarray(panel))
    height = max(t.shape[0] for t in tiles)
    return np.concatenate(
        [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles], 1
    )


def token_heatmap(values: torch.Tensor, height: int, width: int) -> np.ndarray:
    """values (l,) on the packed token grid of a height x width image -> (height, width, 3) uint8, scaled to
    their maximum and enlarged without smoothing."""
    h = int(round((values.numel() * height / width) ** 0.5))
    grid = values.float().reshape(h, -1).cpu().numpy()
    heat = heat_colors(grid / max(float(grid.max()), 1e-8))
    return heat.repeat(height // grid.shape[0], 0).repeat(width // grid.shape[1], 1)
