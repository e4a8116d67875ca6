"""Reading a built cache: its meta.json and the dataset serving its shards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import Dataset

from data_modules.cache.key import _shard_name, is_complete
from data_modules.dataset import Dropout, caption_index, sample_dropout
from data_modules.layouts import FaceRecord
from facemogle.batch import CachedItem


@dataclass
class CacheMeta:
    keys: list[str]
    shard_size: int
    resolution: int
    problems: list[str]
    text: bool


def read_meta(folder: Path) -> CacheMeta:
    if not is_complete(folder):
        raise ValueError(f"latent cache {folder} is missing or incomplete; build it with build_cache")
    meta = json.loads((folder / "meta.json").read_text())
    return CacheMeta(meta["keys"], meta["shard_size"], meta["resolution"], meta["problems"], meta["text"])


class _OpenShard(NamedTuple):
    """An open shard and its small index tensors, read once per process."""

    file: Any  # safetensors safe_open handle
    cond_present: torch.Tensor  # (n, 20) bool
    cond_offsets: torch.Tensor  # (n + 1,) int64
    caption_offsets: torch.Tensor | None  # (n + 1,) int64; None without cached text


class CachedDataset(Dataset):
    """Items from a latent cache; no encoder runs. Keys as FaceDataset's, with latents for images:

    image_latents (l, d), cond_latents (20, l, d) (absent and dropped maps are the empty map's latent),
    cond_keep (20,) bool, labels (H, W) long, caption str ("" when text dropout fires), key str; with
    text cached also text_sequence (s, D), text_pooled (P,) (the prompt "" when text dropout fires).
    Tensors keep the cache's storage dtype.
    """

    def __init__(
        self,
        folder: str | Path,
        records: Sequence[FaceRecord],
        train: bool = False,
        dropout: Dropout | None = None,
    ):
        self.folder = Path(folder)
        meta = read_meta(self.folder)
        index = {k: i for i, k in enumerate(meta.keys)}
        missing = [r.key for r in records if r.key not in index]
        if missing:
            raise ValueError(f"latent cache {self.folder} has no item {missing[0]!r}")
        self.records = list(records)
        self.rows = [index[r.key] for r in records]
        self.shard_size = meta.shard_size
        self.text = meta.text
        self.train = train
        self.dropout = dropout if train else None
        self.common = load_file(self.folder / "common.safetensors")
        self._files: dict[int, _OpenShard] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}  # open safetensors handles stay per process

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, j: int) -> _OpenShard:
        if j not in self._files:
            f = safe_open(self.folder / _shard_name(j), framework="pt")
            captions = f.get_tensor("caption_offsets") if self.text else None
            self._files[j] = _OpenShard(
                f, f.get_tensor("cond_present"), f.get_tensor("cond_offsets"), captions
            )
        return self._files[j]

    def _cond_latents(self, shard: _OpenShard, r: int, keep: torch.Tensor) -> torch.Tensor:
        """(20, l, d): the stored maps where present and kept, the empty map's latent elsewhere."""
        start, end = int(shard.cond_offsets[r]), int(shard.cond_offsets[r + 1])
        rows = torch.cat([self.common["empty_latent"][None], shard.file.get_slice("cond_latents")[start:end]])
        present = shard.cond_present[r]
        return rows[present.cumsum(0) * (present & keep)]  # row 0: the empty map

    def __getitem__(self, index: int) -> CachedItem:
        row = self.rows[index]
        j, r = divmod(row, self.shard_size)
        shard = self._shard(j)
        record = self.records[index]
        keep, drop_text = sample_dropout(self.dropout)
        c = caption_index(len(record.captions), self.train)
        item = CachedItem(
            image_latents=shard.file.get_slice("image_latents")[r],
            cond_latents=self._cond_latents(shard, r, keep),
            cond_keep=keep,
            labels=shard.file.get_slice("labels")[r].long(),
            caption="" if drop_text else record.captions[c],
            key=record.key,
        )
        if self.text and drop_text:
            item["text_sequence"] = self.common["empty_text_sequence"]
            item["text_pooled"] = self.common["empty_text_pooled"]
        elif self.text:
            row_c = int(shard.caption_offsets[r]) + c
            item["text_sequence"] = shard.file.get_slice("text_sequence")[row_c]
            item["text_pooled"] = shard.file.get_slice("text_pooled")[row_c]
        return item
