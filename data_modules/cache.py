"""Latent cache: every image, its 20 condition maps and all its captions encoded once by the frozen backbone.

The VAE and the text encoders never train, so their outputs are a pure function of (data, encoder
weights, resolution, max_sequence_length). `build_cache` stores them under
`cache_root / fingerprint[:24]`, where the fingerprint is a sha256 over
  - the data: every file's path, size and mtime, every caption's text, the problems found;
  - the encoders: VAE and both text encoders' state-dict tensors (full bytes for small tensors, a
    strided sample plus an exact float64 sum for large ones), the VAE scaling/shift, the tokenizers'
    vocabularies, max_sequence_length; the transformer does not enter (it never touches the cache);
  - the resolution, the storage dtype and CACHE_VERSION;
so any change lands in a new folder. Image latents are the VAE posterior MEAN (deterministic), scaled
and shifted as FLUX expects, packed into tokens (facemogle.encode.encode_images).

Folder contents:
    meta.json                  fingerprint inputs, keys in order, shard size, validation problems
    common.safetensors         empty_latent (l, d): the all -1 map, used for absent and dropped regions;
                               empty_text_sequence (s, D), empty_text_pooled (P,): the prompt ""
    shard_{j:05d}.safetensors  items j*shard_size ... : image_latents (n, l, d), cond_latents (n, 20, l, d),
                               labels (n, H, W) uint8, text_sequence (m, s, D), text_pooled (m, P) for the
                               m captions of the n items, caption_offsets (n + 1,) int64
Every file is written to a temporary name and os.replace'd, so a file that exists is complete; an
interrupted build resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data_modules.dataset import Dropout, FaceDataset, caption_index, sample_dropout
from data_modules.layouts import FaceRecord, Problem
from facemogle.backbone import FluxBackbone
from facemogle.encode import encode_images, encode_prompts
from facemogle.face_parts import NUM_CONDITION_MAPS

CACHE_VERSION = 1
_SAMPLE = 1 << 16  # elements hashed from each large tensor, besides its exact sum
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _tensor_digest(h, name: str, t: torch.Tensor) -> None:
    flat = t.detach().reshape(-1)
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    if flat.numel() > _SAMPLE:
        h.update(repr(float(flat.sum(dtype=torch.float64))).encode())
        flat = flat[:: flat.numel() // _SAMPLE][:_SAMPLE]
    h.update(flat.float().cpu().numpy().tobytes())


def encoder_identity(backbone: FluxBackbone) -> str:
    """sha256 of everything in the backbone that the cached tensors depend on."""
    h = hashlib.sha256()
    for label, module in (
        ("vae", backbone.vae),
        ("clip", backbone.text_encoder),
        ("t5", backbone.text_encoder_2),
    ):
        for name, t in module.state_dict().items():
            _tensor_digest(h, f"{label}.{name}", t)
    vae = backbone.vae.config
    h.update(f"vae {vae.scaling_factor} {vae.shift_factor} seq {backbone.max_sequence_length}".encode())
    for tok in (backbone.tokenizer, backbone.tokenizer_2):
        vocab = sorted(tok.get_vocab().items())
        h.update(f"{type(tok).__name__}|{tok.model_max_length}|{json.dumps(vocab)}".encode())
    return h.hexdigest()


def data_identity(records: Sequence[FaceRecord], problems: Sequence[Problem]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.key}\n".encode())
        for path in r.files():
            st = path.stat()
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        h.update(json.dumps(r.captions).encode())
    h.update("\n".join(map(str, problems)).encode())
    return h.hexdigest()


def fingerprint(
    records: Sequence[FaceRecord],
    backbone: FluxBackbone,
    resolution: int,
    dtype: str = "float32",
    problems: Sequence[Problem] = (),
) -> str:
    h = hashlib.sha256()
    parts = (CACHE_VERSION, data_identity(records, problems), encoder_identity(backbone), resolution, dtype)
    h.update(json.dumps(parts).encode())
    return h.hexdigest()


def cache_folder(cache_root: str | Path, key: str) -> Path:
    return Path(cache_root) / key[:24]


def _shard_name(j: int) -> str:
    return f"shard_{j:05d}.safetensors"


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def _atomic_write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def is_complete(folder: Path) -> bool:
    meta = folder / "meta.json"
    if not meta.is_file() or not (folder / "common.safetensors").is_file():
        return False
    n = json.loads(meta.read_text())["num_shards"]
    return all((folder / _shard_name(j)).is_file() for j in range(n))


@torch.no_grad()
def _encode_condition_maps(
    backbone: FluxBackbone, cond_maps: torch.Tensor, empty: torch.Tensor, chunk: int
) -> torch.Tensor:
    """(b, 20, 3, H, W) -> (b, 20, l, d); maps that are entirely empty reuse the empty map's latent.

    The present maps go through the VAE `chunk` at a time, to bound its activation memory."""
    present = cond_maps.flatten(2).amax(-1) > -1.0  # (b, 20)
    out = empty.to(torch.float32).expand(*present.shape, *empty.shape).clone()
    maps = cond_maps[present]  # (n, 3, H, W)
    encoded = [encode_images(backbone, maps[i : i + chunk]).float() for i in range(0, len(maps), chunk)]
    if encoded:
        out[present] = torch.cat(encoded).to(out.device)
    return out


@torch.no_grad()
def _encode_shard(
    backbone: FluxBackbone,
    records: Sequence[FaceRecord],
    resolution: int,
    empty,
    dtype,
    batch_size,
    num_workers,
    bar,
) -> dict:
    """Everything a shard holds for `records`, in their order (the loader does not shuffle)."""
    loader = DataLoader(FaceDataset(records, resolution), batch_size=batch_size, num_workers=num_workers)
    images, conds, labels, seqs, pooled = [], [], [], [], []
    for i, batch in enumerate(loader):
        images.append(encode_images(backbone, batch["image"]).float())
        conds.append(_encode_condition_maps(backbone, batch["cond_maps"], empty, batch_size))
        labels.append(batch["labels"].to(torch.uint8))
        prompts = [c for r in records[i * batch_size : (i + 1) * batch_size] for c in r.captions]
        text = encode_prompts(backbone, prompts)
        seqs.append(text.sequence.float())
        pooled.append(text.pooled.float())
        bar.update(len(batch["key"]))
    offsets = torch.zeros(len(records) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor([len(r.captions) for r in records]).cumsum(0)
    return {
        "image_latents": torch.cat(images).to(dtype).cpu(),
        "cond_latents": torch.cat(conds).to(dtype).cpu(),
        "labels": torch.cat(labels).cpu(),
        "text_sequence": torch.cat(seqs).to(dtype).cpu(),
        "text_pooled": torch.cat(pooled).to(dtype).cpu(),
        "caption_offsets": offsets,
    }


def build_cache(
    records: Sequence[FaceRecord],
    backbone: FluxBackbone,
    resolution: int,
    cache_root: str | Path,
    dtype: str = "float32",
    problems: Sequence[Problem] = (),
    shard_size: int = 256,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    key: str | None = None,
) -> Path:
    """Encode `records` (already validated) once; returns the cache folder. Resumes an interrupted build.

    key: the fingerprint naming the folder; by default over `records` and `problems`. A caller that
    validates lazily passes the fingerprint of the scan instead, so a later run finds the cache
    before validating again."""
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype {dtype!r} is not one of {tuple(DTYPES)}")
    key = key or fingerprint(records, backbone, resolution, dtype, problems)
    folder = cache_folder(cache_root, key)
    if is_complete(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    store = DTYPES[dtype]
    if not (folder / "common.safetensors").is_file():
        empty_map = torch.full((1, 3, resolution, resolution), -1.0)
        empty_text = encode_prompts(backbone, [""])
        common = {
            "empty_latent": encode_images(backbone, empty_map)[0].float(),
            "empty_text_sequence": empty_text.sequence[0].float(),
            "empty_text_pooled": empty_text.pooled[0].float(),
        }
        _atomic_save_tensors({k: v.to(store).cpu() for k, v in common.items()}, folder / "common.safetensors")
    empty = load_file(folder / "common.safetensors")["empty_latent"]
    num_shards = (len(records) + shard_size - 1) // shard_size
    meta = {
        "version": CACHE_VERSION,
        "fingerprint": key,
        "resolution": resolution,
        "dtype": dtype,
        "keys": [r.key for r in records],
        "num_captions": [len(r.captions) for r in records],
        "shard_size": shard_size,
        "num_shards": num_shards,
        "problems": [str(p) for p in problems],
    }
    _atomic_write_json(meta, folder / "meta.json")
    done = [j for j in range(num_shards) if (folder / _shard_name(j)).is_file()]
    initial = sum(min(shard_size, len(records) - j * shard_size) for j in done)
    with tqdm(total=len(records), initial=initial, desc="latent cache", disable=not progress) as bar:
        for j in range(num_shards):
            if j in done:
                continue
            part = records[j * shard_size : (j + 1) * shard_size]
            tensors = _encode_shard(backbone, part, resolution, empty, store, batch_size, num_workers, bar)
            _atomic_save_tensors(tensors, folder / _shard_name(j))
    return folder


@dataclass
class CacheMeta:
    keys: list[str]
    shard_size: int
    resolution: int
    problems: list[str]


def read_meta(folder: Path) -> CacheMeta:
    if not is_complete(folder):
        raise ValueError(f"latent cache {folder} is missing or incomplete; build it with build_cache")
    meta = json.loads((folder / "meta.json").read_text())
    return CacheMeta(meta["keys"], meta["shard_size"], meta["resolution"], meta["problems"])


class CachedDataset(Dataset):
    """Items from a latent cache; no encoder runs. Keys as FaceDataset's, with latents for images:

    image_latents (l, d), cond_latents (20, l, d) (dropped maps are the empty map's latent),
    cond_keep (20,) bool, text_sequence (s, D), text_pooled (P,) (the prompt "" when text dropout
    fires), labels (H, W) long, caption str, key str. Tensors keep the cache's storage dtype.
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
        self.train = train
        self.dropout = dropout if train else None
        self.common = load_file(self.folder / "common.safetensors")
        self._files: dict[int, object] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}  # open safetensors handles stay per process

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, j: int):
        if j not in self._files:
            self._files[j] = safe_open(self.folder / _shard_name(j), framework="pt")
        return self._files[j]

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        shard, r = self._shard(row // self.shard_size), row % self.shard_size
        offsets = shard.get_slice("caption_offsets")[r : r + 2]
        keep, drop_text = sample_dropout(self.dropout)
        cond = shard.get_slice("cond_latents")[r]  # (20, l, d)
        cond = torch.where(keep.view(-1, 1, 1), cond, self.common["empty_latent"])
        record = self.records[index]
        c = caption_index(int(offsets[1] - offsets[0]), self.train)
        if drop_text:
            sequence, pooled = self.common["empty_text_sequence"], self.common["empty_text_pooled"]
        else:
            row_c = int(offsets[0]) + c
            sequence, pooled = shard.get_slice("text_sequence")[row_c], shard.get_slice("text_pooled")[row_c]
        assert cond.shape[0] == NUM_CONDITION_MAPS
        return {
            "image_latents": shard.get_slice("image_latents")[r],
            "cond_latents": cond,
            "cond_keep": keep,
            "text_sequence": sequence,
            "text_pooled": pooled,
            "labels": shard.get_slice("labels")[r].long(),
            "caption": "" if drop_text else record.captions[c],
            "key": record.key,
        }
