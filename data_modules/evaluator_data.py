"""The evaluators' data: a face set's train and test split in memory, and endless augmented training batches.

    faces = SplitFaces.load(EvaluatorDataConfig(root=...))   # read once, shared by the parser and the CLIP
    data = EvaluatorDataModule(faces, batch_size=8, max_blur=1.2, seed=0)

Training batches are dicts: image (b, 3, H, W) float in [0, 1], augmented; labels (b, H, W) long; with
`contrastive` also caption, a list of b strings (a random caption of each face). The test loader gives the
test split in key order with each face's first caption. The split is data_modules.split's (the synthetic
set uses the "fraction" protocol); faces are resized to `resolution` as data_modules.dataset.load_face does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset

from data_modules.dataset import load_faces
from data_modules.layouts import scan
from data_modules.source import DataSource
from data_modules.split import SplitConfig, split_keys
from facemogle.faces import Faces
from facemogle.rules import POSITIVE, Range

COLOUR_JITTER = 0.2  # each channel's gain is drawn from 1 +- COLOUR_JITTER / 2
BLUR_RADIUS = 2  # kernel half-width in pixels: covers 2 sigma of the largest blur the configs use


@dataclass
class EvaluatorDataConfig(DataSource):
    split: SplitConfig = field(default_factory=lambda: SplitConfig(protocol="fraction"))
    test_batch_size: int = 64

    RULES: ClassVar[dict[str, Range]] = {**DataSource.RULES, "test_batch_size": POSITIVE}


@dataclass
class SplitFaces:
    train: Faces
    test: Faces

    @classmethod
    def load(cls, config: EvaluatorDataConfig) -> SplitFaces:
        found = scan(config.root, config.layout, config.captions)
        if found.problems:
            raise ValueError(f"{config.root}: {len(found.problems)} problems, first: {found.problems[0]}")
        by_key = {r.key: r for r in found.records}
        split = split_keys(by_key, config.split)
        for name in ("train", "test"):
            if not getattr(split, name):
                raise ValueError(
                    f"{config.root}: the {name} split is empty ({len(by_key)} faces, {config.split})"
                )
        return cls(
            load_faces([by_key[k] for k in split.train], config.resolution),
            load_faces([by_key[k] for k in split.test], config.resolution),
        )


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = BLUR_RADIUS) -> torch.Tensor:
    """images (b, c, H, W), sigma (b,) in pixels (0: unchanged) -> blurred, edges replicated."""
    b, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma[:, None].to(images.dtype).clamp_min(1e-3) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (b*c, 2r+1)
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


def augment(images: torch.Tensor, g: torch.Generator, max_blur: float) -> torch.Tensor:
    """Colour jitter, and a Gaussian blur of sigma U(0, max_blur) pixels on half the images: the parser
    reads generated faces, softer than the drawn ones. No geometry: that would have to move the labels too."""
    b = images.shape[0]
    gain = 1 + COLOUR_JITTER * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)
    images = images * gain
    if max_blur > 0:
        sigma = max_blur * torch.rand(b, generator=g) * (torch.rand(b, generator=g) < 0.5)
        images = gaussian_blur(images, sigma)
    return images.clamp(0, 1)


class TrainBatches(IterableDataset):
    """Endless training batches from one generator seeded with `seed`: each batch draws its faces, then
    (contrastive) a caption of each, then its augmentation, so the stream is a function of the seed alone.

    contrastive=False (the parser): faces drawn with replacement, no captions.
    contrastive=True (the CLIP): distinct faces in a batch, since a repeated face would be its own negative.
    """

    def __init__(self, faces: Faces, batch_size: int, max_blur: float, seed: int, contrastive: bool = False):
        if contrastive and batch_size > len(faces):
            raise ValueError(f"batch_size {batch_size}: expected 1..{len(faces)} (the training faces)")
        self.faces, self.batch_size, self.max_blur = faces, batch_size, max_blur
        self.seed, self.contrastive = seed, contrastive

    def __iter__(self) -> Iterator[dict]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield self.draw(g)

    def draw(self, g: torch.Generator) -> dict:
        n, faces = len(self.faces), self.faces
        if self.contrastive:
            index = torch.randperm(n, generator=g)[: self.batch_size]
        else:
            index = torch.randint(n, (self.batch_size,), generator=g)
        batch = {}
        if self.contrastive:
            batch["caption"] = [
                faces.all_captions[i][int(torch.randint(len(faces.all_captions[i]), (), generator=g))]
                for i in index
            ]
        batch["image"] = augment(faces.images[index], g, self.max_blur)
        batch["labels"] = faces.labels[index]
        return batch


class FirstCaptionFaces(Dataset):
    """Evaluation items: image (3, H, W) in [0, 1], labels (H, W), the face's first caption."""

    def __init__(self, faces: Faces):
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict:
        f = self.faces
        return {"image": f.images[i], "labels": f.labels[i], "caption": f.captions[i]}


class EvaluatorDataModule(L.LightningDataModule):
    """One evaluator's data: `TrainBatches` over the training faces, the test faces in order."""

    def __init__(
        self,
        faces: SplitFaces,
        batch_size: int,
        max_blur: float = 0.0,
        seed: int = 0,
        contrastive: bool = False,
        test_batch_size: int = 64,
    ):
        super().__init__()
        self.faces = faces
        self.batches = TrainBatches(faces.train, batch_size, max_blur, seed, contrastive)
        self.test_batch_size = test_batch_size

    def train_dataloader(self) -> DataLoader:
        # No workers: a batch is a slice of tensors in memory, and one process keeps the seeded stream whole.
        # The loader's own generator: without one it draws its seed from the global RNG that dropout uses.
        return DataLoader(self.batches, batch_size=None, generator=torch.Generator())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(FirstCaptionFaces(self.faces.test), batch_size=self.test_batch_size, shuffle=False)
