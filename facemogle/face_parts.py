"""CelebAMask-HQ face parts: names, merge order, colour palette, and the mask split into condition maps.

Every other module takes these facts from here. The order is the official label order of
CelebAMask-HQ (also its merge order: a later part overwrites an earlier one where annotations overlap),
and the palette is the colour map the CelebAMask-HQ release uses to visualise label maps.

Condition maps, as Face-MoGLE uses them: index 0 is the global colour map (the whole label map in the
palette), indices 1..19 are binary maps, one per part, background included. All are 3-channel images
in [-1, 1] so that the frozen image VAE can encode them like any picture.
"""

from __future__ import annotations

import numpy as np
import torch

PARTS: tuple[str, ...] = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)
NUM_PARTS = len(PARTS)  # 19 local experts, one per part
NUM_CONDITION_MAPS = NUM_PARTS + 1  # global colour map + one binary map per part
CONDITION_MAPS: tuple[str, ...] = ("global", *PARTS)  # `split_mask`'s maps, and MoGLE's experts, in order
PART_INDEX: dict[str, int] = {name: i for i, name in enumerate(PARTS)}

# CelebAMask-HQ's visualisation palette, row i is the colour of part i.
PALETTE = np.array(
    [
        [0, 0, 0],
        [204, 0, 0],
        [76, 153, 0],
        [204, 204, 0],
        [51, 51, 255],
        [204, 0, 204],
        [0, 255, 255],
        [255, 204, 204],
        [102, 51, 0],
        [255, 0, 0],
        [102, 204, 0],
        [255, 255, 0],
        [0, 0, 153],
        [0, 0, 204],
        [255, 51, 153],
        [0, 204, 204],
        [0, 51, 0],
        [255, 153, 51],
        [0, 204, 0],
    ],
    dtype=np.uint8,
)
assert PALETTE.shape == (NUM_PARTS, 3) and len({tuple(c) for c in PALETTE}) == NUM_PARTS


def check_labels(labels: np.ndarray | torch.Tensor, source: str = "label map") -> None:
    """Raise a ValueError naming `source` when a label map holds values outside 0..18."""
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= NUM_PARTS:
        bad = hi if hi >= NUM_PARTS else lo
        raise ValueError(
            f"{source}: label {bad} is out of range; CelebAMask-HQ labels are 0..{NUM_PARTS - 1}"
        )


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 image in the palette."""
    check_labels(labels)
    return PALETTE[np.asarray(labels, dtype=np.int64)]


def labels_from_colors(rgb: np.ndarray, source: str = "mask") -> np.ndarray:
    """(H, W, 3) uint8 palette image -> (H, W) uint8 labels; an unknown colour is a ValueError."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{source}: expected an RGB image (H, W, 3), got shape {tuple(rgb.shape)}")
    code = _color_code(rgb.astype(np.int64))
    table = _color_code(PALETTE.astype(np.int64))
    order = np.argsort(table)
    pos = np.clip(np.searchsorted(table[order], code), 0, NUM_PARTS - 1)
    found = table[order][pos] == code
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise ValueError(
            f"{source}: colour {tuple(int(v) for v in rgb[y, x])} at pixel (x={x}, y={y}) "
            "is not in the CelebAMask-HQ palette"
        )
    return order[pos].astype(np.uint8)


def _color_code(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def split_mask(labels: torch.Tensor) -> torch.Tensor:
    """Label map(s) -> the 20 condition maps Face-MoGLE encodes.

    labels: (..., H, W) integer tensor with values in 0..18.
    returns: (..., 20, 3, H, W) float tensor in [-1, 1]; [..., 0] is the global colour map,
    [..., 1 + k] the binary map of part k (white where the part is, black elsewhere).
    """
    check_labels(labels)
    labels = labels.long()
    palette = torch.as_tensor(PALETTE, device=labels.device, dtype=torch.float32) / 127.5 - 1.0
    global_map = palette[labels].movedim(-1, -3)  # (..., 3, H, W)
    parts = torch.arange(NUM_PARTS, device=labels.device)
    binary = (labels.unsqueeze(-3) == parts.view(-1, 1, 1)).float() * 2.0 - 1.0  # (..., 19, H, W)
    binary = binary.unsqueeze(-3).expand(*binary.shape[:-2], 3, *binary.shape[-2:])  # (..., 19, 3, H, W)
    return torch.cat([global_map.unsqueeze(-4), binary], dim=-4)


def present_maps(labels: torch.Tensor) -> torch.Tensor:
    """Label map(s) (..., H, W) -> (..., 20) bool: which of `split_mask`'s maps are not the empty map (all
    -1). A part's map is empty where the part is absent; the global map where every pixel's colour is
    black (background). Counted from the labels, without building the maps."""
    check_labels(labels)
    parts = torch.arange(NUM_PARTS, device=labels.device)
    has = (labels.long().flatten(-2).unsqueeze(-2) == parts.view(-1, 1)).any(-1)  # (..., 19)
    coloured = torch.as_tensor(PALETTE.any(-1), device=labels.device)  # (19,): parts not black
    return torch.cat([(has & coloured).any(-1, keepdim=True), has], dim=-1)
