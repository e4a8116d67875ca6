"""Stage 1's data: the training faces held in memory, and the two datasets the backbone pretrains on.

    ImagesAndMaps   {"image": (3, H, W) in [-1, 1]}: a face, or one of its condition maps
    LatentCaptions  {"latents": (l, d), "text_sequence": (s, D), "text_pooled": (P,)}: cached latents
                    and one of the face's caption embeddings (or the empty prompt's)

Randomness (map or face, which map, which caption, text dropout) draws from torch's global generator,
so a seeded run is reproducible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from data_modules.dataset import image_to_tensor, load_face
from data_modules.layouts import scan
from data_modules.split import SplitConfig, split_keys
from facemogle.encode import TextEmbeddings
from facemogle.face_parts import split_mask

log = logging.getLogger(__name__)


@dataclass
class TrainFaces:
    images: torch.Tensor  # (n, 3, H, W) in [-1, 1]
    labels: torch.Tensor  # (n, H, W) long
    captions: list[list[str]]  # each face's captions


def load_train_faces(root: str | Path, split: SplitConfig, resolution: int) -> TrainFaces:
    """The training split's faces at `resolution`, without condition maps (stage 1 draws its own)."""
    found = scan(root)
    if found.problems:
        log.warning(
            "%s: %d problems (their faces are left out), first: %s",
            root,
            len(found.problems),
            found.problems[0],
        )
    by_key = {r.key: r for r in found.records}
    records = [by_key[k] for k in split_keys(list(by_key), split).train]
    if not records:
        raise ValueError(f"{root}: the training split is empty")
    for r in records:
        if not r.captions:
            raise ValueError(f"{r.caption_file or r.image}: face {r.key} has no caption")
    faces = [load_face(r, resolution) for r in records]
    return TrainFaces(
        images=torch.stack([image_to_tensor(image) for image, _ in faces]),
        labels=torch.stack([torch.from_numpy(mask).long() for _, mask in faces]),
        captions=[list(r.captions) for r in records],
    )


class ImagesAndMaps(Dataset):
    """VAE training samples: face i, or with probability `map_share` one of face i's condition maps (the
    colour map or the binary map of a part the face has), in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, map_share: float):
        self.images, self.labels, self.map_share = images, labels, map_share

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        if torch.rand(()) >= self.map_share:
            return {"image": self.images[i]}
        present = torch.unique(self.labels[i])
        maps = torch.cat([torch.zeros(1, dtype=torch.long), 1 + present])  # 0: the colour map
        k = maps[torch.randint(len(maps), ())]
        return {"image": split_mask(self.labels[i])[k]}


class LatentCaptions(Dataset):
    """Cached image latents with all their captions' embeddings; text dropout picks the empty prompt."""

    def __init__(
        self,
        latents: torch.Tensor,
        captions: list[TextEmbeddings],
        empty: TextEmbeddings,
        text_dropout: float,
    ):
        self.latents, self.captions, self.empty, self.text_dropout = latents, captions, empty, text_dropout

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> dict:
        text = self.captions[i]
        j = int(torch.randint(len(text), ()))
        seq, pooled = text.sequence[j], text.pooled[j]
        if torch.rand(()) < self.text_dropout:
            seq, pooled = self.empty.sequence[0], self.empty.pooled[0]
        return {"latents": self.latents[i], "text_sequence": seq, "text_pooled": pooled}
