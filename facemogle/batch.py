"""What a training item is: the keys the data modules put in it and the LightningModules read (collated, each
tensor gains a leading batch dimension, each string becomes a list).

    FaceItem    read from disk (data_modules.dataset.FaceDataset): pixels, encoded on the fly
    CachedItem  read from the latent cache (data_modules.cache.CachedDataset): latents, with the captions'
                embeddings when the cache holds them
"""

from __future__ import annotations

from typing import TypedDict

import torch


class FaceItem(TypedDict):
    image: torch.Tensor  # (3, H, W) in [-1, 1]
    cond_maps: torch.Tensor  # (20, 3, H, W) in [-1, 1]: facemogle.face_parts.split_mask; a dropped map all -1
    cond_keep: torch.Tensor  # (20,) bool: which condition maps were kept
    labels: torch.Tensor  # (H, W) long in 0..18
    caption: str  # "" when text dropout fired
    key: str  # the face's id (file stem)


class _CachedLatents(TypedDict):
    image_latents: torch.Tensor  # (l, d) packed tokens
    cond_latents: torch.Tensor  # (20, l, d); a dropped map's are the empty map's latents
    cond_keep: torch.Tensor
    labels: torch.Tensor
    caption: str
    key: str


class CachedItem(_CachedLatents, total=False):  # (NotRequired is Python 3.11's; the project runs on 3.10)
    text_sequence: torch.Tensor  # (s, D) T5 embedding, when the cache holds the captions'
    text_pooled: torch.Tensor  # (P,) CLIP pooled embedding
