"""Mask images -> label maps: one reading for data files, the pipeline and the demo.

Accepted: a label map (grayscale "L" / "I" / "1": the pixel value is the label), a palette ("P") PNG (by
colour when its colours are CelebAMask-HQ's, so a palette listing them in another order keeps its labels; by
index when they are greys (i, i, i)), or an RGB / RGBA image in the CelebAMask-HQ palette (a transparent
pixel is background).

Strict reading (data files) makes an unknown colour an error. `snap=True` (the pipeline, the demo) gives a
colour near a palette colour the nearest colour's class instead: a mask saved as JPEG, or drawn with a
soft-edged brush, holds such colours. A picture most of whose pixels are far from every palette colour (a
photo) is still an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facemogle.face_parts import NUM_PARTS, PALETTE, PARTS, check_labels, labels_from_colors

LABEL_MODES = ("L", "P", "1", "I", "I;16")
# RGB distance below which a colour counts as a palette colour: JPEG's rounding and chroma noise stay under it
NEAR = 24.0
# more than this share of pixels farther than NEAR from every colour: a picture, not a mask
FAR_SHARE = 0.5


@dataclass
class MaskReading:
    labels: np.ndarray  # (H, W) uint8 in 0..18
    snapped: int = 0  # pixels whose colour was off the palette and took the nearest colour's class
    far: int = 0  # of those, the ones farther than NEAR from it

    def warning(self, source: str = "mask") -> str | None:
        """A sentence for the user when colours were snapped, else None."""
        if not self.snapped:
            return None
        share = self.snapped / self.labels.size
        return (
            f"{source}: {self.snapped} pixels ({share:.1%}) are not exactly CelebAMask-HQ palette colours "
            f"(a JPEG-saved or soft-brushed mask?); each took the class of the nearest colour "
            f"({self.far} of them were far from any)"
        )


def labels_from_image(im: Image.Image, source: str = "mask", snap: bool = False) -> MaskReading:
    """A mask image -> its labels. An unknown colour is a ValueError naming `source` unless `snap`."""
    if im.mode in ("RGB", "RGBA"):
        if not snap:
            return MaskReading(labels_from_colors(np.asarray(im.convert("RGB")), source=source))
        rgba = np.asarray(im.convert("RGBA"))
        opaque = np.where(rgba[..., 3:] >= 128, rgba[..., :3], 0)  # a transparent pixel is background
        return snap_colors(opaque, source)
    if im.mode not in LABEL_MODES:
        raise ValueError(
            f"{source}: unsupported mask mode {im.mode!r} (use a label map or an RGB palette image)"
        )
    if im.mode == "P":
        try:
            labels = palette_labels(im, source)
        except ValueError:
            if not snap:
                raise
            return snap_colors(np.asarray(im.convert("RGB")), source)
    else:
        labels = np.asarray(im).astype(np.int64)
    check_labels(labels, source=source)
    return MaskReading(labels.astype(np.uint8))


def snap_colors(rgb: np.ndarray, source: str = "mask") -> MaskReading:
    """(H, W, 3) colours -> the class of the nearest palette colour; mostly far colours are a ValueError."""
    flat = rgb.reshape(-1, 3).astype(np.int64)
    codes, inverse = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2], return_inverse=True)
    colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.float32)  # (u, 3)
    dist = np.sqrt(((colours[:, None] - PALETTE.astype(np.float32)) ** 2).sum(-1))  # (u, 19)
    labels = dist.argmin(-1)[inverse].reshape(rgb.shape[:2])
    nearest = dist.min(-1)[inverse]
    far = int((nearest > NEAR).sum())
    if far > FAR_SHARE * nearest.size:
        raise ValueError(
            f"{source}: {far / nearest.size:.0%} of the pixels are far from every CelebAMask-HQ palette colour: "
            "not a palette mask (draw or upload one with the palette's colours, or a label map)"
        )
    return MaskReading(labels.astype(np.uint8), int((nearest > 0).sum()), far)


def palette_labels(im: Image.Image, source: str) -> np.ndarray:
    """(H, W) labels of a palette ("P") image: by colour when the used entries are CelebAMask-HQ colours,
    by index when they are greys (i, i, i); any other palette is a ValueError naming `source`."""
    index = np.asarray(im).astype(np.int64)
    palette = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    used = np.unique(index)
    if used.max(initial=0) >= len(palette):
        raise ValueError(f"{source}: palette index {used.max()} has no colour in the file's palette")
    colours = palette[used]
    ours = {tuple(c) for c in PALETTE.tolist()}
    if all(tuple(c) in ours for c in colours.tolist()):
        return labels_from_colors(palette[index].astype(np.uint8), source=source).astype(np.int64)
    if (colours == used[:, None]).all():
        return index
    odd = next(c for c in colours.tolist() if tuple(c) not in ours)
    raise ValueError(
        f"{source}: palette colour {tuple(odd)} is neither a CelebAMask-HQ colour nor a grey label; "
        "save the mask as a grayscale label map or in the CelebAMask-HQ palette"
    )


def mask_batch(masks) -> tuple[torch.Tensor | None, list[str]]:
    """Label maps (b, H, W) from a PIL image (snapped: see the module's docstring), an (H, W) or (b, H, W)
    integer array or tensor, or a list of them; and a warning for each image whose colours were snapped."""
    if masks is None:
        return None, []
    labels, warnings = [], []
    for i, item in enumerate(masks if isinstance(masks, list) else [masks]):
        if isinstance(item, Image.Image):
            reading = labels_from_image(item, source=f"mask_image[{i}]", snap=True)
            warnings += [reading.warning(f"mask_image[{i}]")] if reading.snapped else []
            item = reading.labels
        item = (item if torch.is_tensor(item) else torch.from_numpy(np.asarray(item))).long()
        labels.append(item if item.dim() == 3 else item[None])
    return torch.cat(labels), warnings


def majority_downsample(labels: torch.Tensor, size: int) -> torch.Tensor:
    """(b, H, W) labels -> (b, size, size * W // H): each output pixel the most frequent label of its block
    when H is a multiple of `size` (stray edge pixels of a drawn mask do not survive), nearest otherwise."""
    h, w = labels.shape[-2:]
    out_w = size * w // h
    if h % size or w % out_w:
        return F.interpolate(labels[:, None].float(), size=(size, out_w), mode="nearest")[:, 0].long()
    onehot = F.one_hot(labels.long(), NUM_PARTS).permute(0, 3, 1, 2).float()  # (b, 19, H, W)
    counts = F.avg_pool2d(onehot, kernel_size=(h // size, w // out_w))
    return counts.argmax(1)


def part_names(labels: np.ndarray | torch.Tensor) -> list[str]:
    """The parts present in a label map, in PARTS order."""
    return [PARTS[i] for i in sorted({int(v) for v in np.unique(np.asarray(labels))})]
