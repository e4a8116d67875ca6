"""Face items read from disk: image, label map, the 20 condition maps and a caption.

An item (and, collated, a batch with a leading b) is a facemogle.batch.FaceItem:

    image      (3, H, W) float in [-1, 1]     the face, LANCZOS-resized to the resolution
    cond_maps  (20, 3, H, W) float in [-1, 1] facemogle.face_parts.split_mask of the labels; a dropped
                                              region map is the empty map (all -1); 0 is never dropped
    cond_keep  (20,) bool                     which condition maps were kept
    labels     (H, W) long in 0..18           the label map, NEAREST-resized
    caption    str                            a random caption in training, the first in evaluation;
                                              "" when text dropout fired
    key        str                            the face's id (file stem)

Non-square images (and their masks) are centre-cropped to a square first. Randomness (caption choice,
dropout) draws from torch's global generator, which DataLoader seeds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data_modules.face_files import read_mask
from data_modules.layouts import FaceRecord
from data_modules.readers import oriented
from facemogle.batch import FaceItem
from facemogle.face_parts import NUM_CONDITION_MAPS, split_mask
from facemogle.faces import Faces


@dataclass(frozen=True)
class Dropout:
    """Training-time condition dropout; the paper uses 0.1 for each. Its probabilities are the config's
    data.text_dropout and data.region_dropout, whose ranges DataConfig checks."""

    text: float = 0.0  # probability that the caption becomes ""
    region: float = 0.0  # per local map (1..19) probability that it becomes the empty map


def sample_dropout(dropout: Dropout | None) -> tuple[torch.Tensor, bool]:
    """(cond_keep (20,) bool, drop_text); the global map (index 0) is always kept."""
    keep = torch.ones(NUM_CONDITION_MAPS, dtype=torch.bool)
    if dropout is None:
        return keep, False
    keep[1:] = torch.rand(NUM_CONDITION_MAPS - 1) >= dropout.region
    return keep, bool(torch.rand(()) < dropout.text)


def caption_index(num_captions: int, train: bool) -> int:
    return int(torch.randint(num_captions, ())) if train else 0


def _center_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    if w == h:
        return im
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def load_face(record: FaceRecord, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """-> image (resolution, resolution, 3) uint8, labels (resolution, resolution) uint8."""
    with Image.open(record.image) as im:
        im.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale, still >= resolution
        im = _center_square(oriented(im).convert("RGB"))
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        image = np.array(im)
    return image, load_labels(record, resolution)


def load_labels(record: FaceRecord, resolution: int) -> np.ndarray:
    """-> labels (resolution, resolution) uint8, as `load_face` gives them, without decoding the image."""
    mask = _center_square(Image.fromarray(read_mask(record)))
    if mask.size != (resolution, resolution):
        mask = mask.resize((resolution, resolution), Image.Resampling.NEAREST)
    return np.array(mask)


def load_faces(records: Sequence[FaceRecord], resolution: int) -> Faces:
    """Records -> Faces at `resolution` with every caption (the first is the one evaluation uses); a face
    without captions is an error naming its caption file."""
    if not records:
        raise ValueError("no faces to load")
    for r in records:
        if not r.captions:
            raise ValueError(f"{r.caption_file or r.image}: face {r.key} has no caption")
    images, labels = zip(*(load_face(r, resolution) for r in records), strict=True)
    return Faces(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0,
        labels=torch.from_numpy(np.stack(labels)).long(),
        captions=[r.captions[0] for r in records],
        all_captions=[tuple(r.captions) for r in records],
    )


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0


class FaceDataset(Dataset):
    """Records -> items (see the module docstring). `train` switches on caption sampling and dropout."""

    def __init__(
        self,
        records: Sequence[FaceRecord],
        resolution: int,
        train: bool = False,
        dropout: Dropout | None = None,
    ):
        self.records = list(records)
        self.resolution = resolution
        self.train = train
        self.dropout = dropout if train else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> FaceItem:
        record = self.records[index]
        image, labels = load_face(record, self.resolution)
        labels_t = torch.from_numpy(labels).long()  # (H, W)
        keep, drop_text = sample_dropout(self.dropout)
        cond = split_mask(labels_t)  # (20, 3, H, W)
        cond = torch.where(keep.view(-1, 1, 1, 1), cond, torch.full_like(cond, -1.0))
        caption = "" if drop_text else record.captions[caption_index(len(record.captions), self.train)]
        return FaceItem(
            image=image_to_tensor(image),
            cond_maps=cond,
            cond_keep=keep,
            labels=labels_t,
            caption=caption,
            key=record.key,
        )
