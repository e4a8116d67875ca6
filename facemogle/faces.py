"""Faces as sampling and the generation metrics take them: images, label maps and one caption each.

data_modules loads them (`data_modules.dataset.load_faces`); the generation-metrics callback and the
evaluation command sample and score them. It lives here, below both, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Faces:
    images: torch.Tensor  # (n, 3, H, W) float in [0, 1]
    labels: torch.Tensor  # (n, H, W) long in 0..18
    captions: list[str]  # one per face: its first caption
    all_captions: list[tuple[str, ...]] | None = None  # every caption of each face, where loaded

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.all_captions is not None and len(self.all_captions) != n:
            raise ValueError(f"faces: {n} images, {len(self.all_captions)} caption sets")
        if self.labels.shape[0] != n or len(self.captions) != n:
            raise ValueError(
                f"faces: {n} images, {self.labels.shape[0]} label maps, {len(self.captions)} captions"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, part: slice | range) -> Faces:
        """The faces part.start..part.stop - 1 (a slice, or a contiguous range of indices)."""
        if isinstance(part, range):
            part = slice(part.start, part.stop)
        sets = self.all_captions[part] if self.all_captions is not None else None
        return Faces(self.images[part], self.labels[part], self.captions[part], sets)
