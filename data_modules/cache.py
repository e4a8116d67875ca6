"""Latent cache: every image and its condition maps (and, by choice, all its captions) encoded once by the
frozen backbone.

The VAE and the text encoders never train, so their outputs are a pure function of (data, encoder
weights, resolution, max_sequence_length). `build_cache` stores them under
`cache_root / fingerprint[:24]`, where the fingerprint is a sha256 over
  - the data: every file's path, size and mtime, every caption's text, the problems found;
  - the encoders: the VAE's (and, with text cached, both text encoders') state-dict tensors (full bytes
    for small tensors, a strided sample plus an exact float64 sum for large ones), the VAE scaling/shift,
    with text the tokenizers' vocabularies and max_sequence_length; the transformer does not enter (it
    never touches the cache);
  - the resolution, the storage dtype, whether text is cached, and CACHE_VERSION;
so any change lands in a new folder. Image latents are the VAE posterior MEAN (deterministic), scaled
and shifted as FLUX expects, packed into tokens (facemogle.encode.encode_images).

Without text (`text=False`) the cache holds no T5 / CLIP outputs: items carry their caption and the
training step encodes it (FaceMoGLEModule.prepare). A caption's T5 sequence, padded to max_sequence_length,
is most of a text cache's size: `estimate_size` says how much, and `build_cache` refuses to start when
the disk lacks the room.

Folder contents:
    meta.json                  fingerprint inputs, keys in order, shard size, text or not, problems
    common.safetensors         empty_latent (l, d): the all -1 map, used for absent and dropped regions;
                               with text, empty_text_sequence (s, D), empty_text_pooled (P,): the prompt ""
    shard_{j:05d}.safetensors  items j*shard_size ... (n of them):
                                 image_latents (n, l, d)
                                 cond_present (n, 20) bool      which maps are not the empty map
                                 cond_latents (m, l, d)         the m present maps, item after item
                                 cond_offsets (n + 1,) int64    item i's maps: rows offsets[i]:offsets[i+1]
                                 labels (n, H, W) uint8
                               with text, for the c captions of the n items:
                                 text_sequence (c, s, D), text_pooled (c, P), caption_offsets (n + 1,) int64
Every file is written to a temporary name and os.replace'd, so a file that exists is complete (a failed
write removes its temporary file); an interrupted build resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data_modules.dataset import Dropout, FaceDataset, caption_index, load_labels, sample_dropout
from data_modules.layouts import FaceRecord, Problem
from facemogle.atomic import atomic_write, atomic_write_text
from facemogle.backbone import FluxBackbone
from facemogle.encode import encode_images, encode_prompts
from facemogle.face_parts import NUM_CONDITION_MAPS, present_maps

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: absent condition maps share common.safetensors' empty_latent; text optional
_SAMPLE = 1 << 16  # elements hashed from each large tensor, besides its exact sum
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HEADER_BYTES = 128  # allowance per tensor for its entry in a safetensors file's JSON header
_FINGERPRINT_CHARS = 64  # a sha256 hex digest, as meta.json stores it
PRESENT_SAMPLE = 256  # label maps read to count a large data set's present condition maps


def _tensor_digest(h, name: str, t: torch.Tensor) -> None:
    flat = t.detach().reshape(-1)
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    if flat.numel() > _SAMPLE:
        h.update(repr(float(flat.sum(dtype=torch.float64))).encode())
        flat = flat[:: flat.numel() // _SAMPLE][:_SAMPLE]
    h.update(flat.float().cpu().numpy().tobytes())


def encoder_identity(backbone: FluxBackbone, text: bool = True) -> str:
    """sha256 of everything in the backbone that the cached tensors depend on (the text encoders and
    tokenizers only when text is cached)."""
    h = hashlib.sha256()
    modules = [("vae", backbone.vae)]
    if text:
        modules += [("clip", backbone.text_encoder), ("t5", backbone.text_encoder_2)]
    for label, module in modules:
        for name, t in module.state_dict().items():
            _tensor_digest(h, f"{label}.{name}", t)
    vae = backbone.vae.config
    h.update(f"vae {vae.scaling_factor} {vae.shift_factor}".encode())
    if text:
        h.update(f" seq {backbone.max_sequence_length}".encode())
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
    text: bool = True,
) -> str:
    h = hashlib.sha256()
    parts = (
        CACHE_VERSION,
        data_identity(records, problems),
        encoder_identity(backbone, text),
        resolution,
        dtype,
        text,
    )
    h.update(json.dumps(parts).encode())
    return h.hexdigest()


def cache_folder(cache_root: str | Path, key: str) -> Path:
    return Path(cache_root) / key[:24]


def _shard_name(j: int) -> str:
    return f"shard_{j:05d}.safetensors"


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))


def _json(data: dict) -> str:
    return json.dumps(data, indent=1)


def _atomic_write_json(data: dict, path: Path) -> None:
    atomic_write_text(path, _json(data))


def is_complete(folder: Path) -> bool:
    meta = folder / "meta.json"
    if not meta.is_file() or not (folder / "common.safetensors").is_file():
        return False
    n = json.loads(meta.read_text())["num_shards"]
    return all((folder / _shard_name(j)).is_file() for j in range(n))


# --- size ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentShapes:
    """The sizes of one item's cached tensors, from the backbone's configuration (no encoder runs)."""

    resolution: int  # H = W, the label map's side
    tokens: int  # l = (resolution / vae_scale_factor / 2)^2 packed image tokens
    token_dim: int  # d = the transformer's in_channels
    text_len: int  # s = max_sequence_length T5 tokens (padded)
    text_dim: int  # D = T5's d_model
    pooled_dim: int  # P = CLIP's hidden size

    @classmethod
    def of(cls, backbone: FluxBackbone, resolution: int) -> LatentShapes:
        step = 2 * backbone.vae_scale_factor  # VAE downsampling, then 2x2 latent patches per token
        if resolution <= 0 or resolution % step:
            raise ValueError(f"resolution {resolution} is not a positive multiple of {step} (2 x VAE factor)")
        return cls(
            resolution=resolution,
            tokens=(resolution // step) ** 2,
            token_dim=backbone.token_dim,
            text_len=backbone.max_sequence_length,
            text_dim=backbone.text_encoder_2.config.d_model,
            pooled_dim=backbone.text_encoder.config.hidden_size,
        )


@dataclass(frozen=True)
class SizeEstimate:
    """What a cache folder takes on disk: tensor bytes from the counts and shapes, an allowance for each
    safetensors header, and meta.json."""

    shapes: LatentShapes
    dtype: str
    text: bool
    faces: int
    captions: int  # over all faces
    present_maps: int  # condition maps stored (not the empty map), over all faces
    shard_size: int
    meta_bytes: int

    @property
    def bytes(self) -> int:
        e, sh = DTYPES[self.dtype].itemsize, self.shapes
        latent = sh.tokens * sh.token_dim * e
        caption = (sh.text_len * sh.text_dim + sh.pooled_dim) * e
        shards = -(-self.faces // self.shard_size)
        offsets = 8 * (self.faces + shards)  # an int64 (n + 1,) offsets tensor per shard
        total = self.faces * (latent + NUM_CONDITION_MAPS + sh.resolution**2) + self.present_maps * latent
        total += offsets + latent  # cond_offsets; common's empty_latent
        tensors = 5 * shards + 1
        if self.text:
            total += self.captions * caption + offsets + caption  # caption_offsets; the empty prompt
            tensors += 3 * shards + 2
        return total + _HEADER_BYTES * tensors + self.meta_bytes

    def per_face(self) -> float:
        return self.bytes / max(self.faces, 1)

    def scaled(self, faces: int, captions: int) -> SizeEstimate:
        """The same data set's make-up at another size: present maps and meta.json bytes per face kept."""
        ratio = faces / max(self.faces, 1)
        return replace(
            self,
            faces=faces,
            captions=captions,
            present_maps=round(self.present_maps * ratio),
            meta_bytes=round(self.meta_bytes * ratio),
        )


def count_present_maps(records: Sequence[FaceRecord], resolution: int, sample: int = PRESENT_SAMPLE) -> int:
    """Condition maps that are not the empty map, over all records: counted on at most `sample` label maps
    spread evenly over the records, and scaled to all of them."""
    if not records:
        return 0
    picked = np.unique(np.linspace(0, len(records) - 1, min(len(records), sample)).round().astype(int))
    counts = [int(present_maps(torch.from_numpy(load_labels(records[i], resolution))).sum()) for i in picked]
    return round(sum(counts) * len(records) / len(picked))


def _meta(
    records: Sequence[FaceRecord],
    key: str,
    resolution: int,
    dtype: str,
    text: bool,
    shard_size: int,
    problems: Sequence[Problem],
) -> dict:
    return {
        "version": CACHE_VERSION,
        "fingerprint": key,
        "resolution": resolution,
        "dtype": dtype,
        "text": text,
        "keys": [r.key for r in records],
        "num_captions": [len(r.captions) for r in records],
        "shard_size": shard_size,
        "num_shards": -(-len(records) // shard_size),
        "problems": [str(p) for p in problems],
    }


def estimate_size(
    records: Sequence[FaceRecord],
    backbone: FluxBackbone,
    resolution: int,
    dtype: str = "float32",
    text: bool = True,
    shard_size: int = 256,
    problems: Sequence[Problem] = (),
    sample: int = PRESENT_SAMPLE,
) -> SizeEstimate:
    """The bytes `build_cache` will write for `records`, before it writes any: shapes from the backbone's
    configuration, present condition maps counted on `sample` label maps."""
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype {dtype!r} is not one of {tuple(DTYPES)}")
    meta = _meta(records, "0" * _FINGERPRINT_CHARS, resolution, dtype, text, shard_size, problems)
    return SizeEstimate(
        shapes=LatentShapes.of(backbone, resolution),
        dtype=dtype,
        text=text,
        faces=len(records),
        captions=sum(len(r.captions) for r in records),
        present_maps=count_present_maps(records, resolution, sample),
        shard_size=shard_size,
        meta_bytes=len(_json(meta).encode()),
    )


def format_bytes(n: float) -> str:
    """1234567 -> '1.23 MB' (decimal units)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while abs(n) >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.3g} {units[i]}"


def folder_bytes(folder: Path) -> int:
    """Bytes of the finished files in a cache folder (temporary files left by a killed run excluded)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds `path`, or will once it is created."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _check_room(folder: Path, estimate: SizeEstimate) -> None:
    """Log the estimate; a ValueError, before anything is written, when the disk lacks the room."""
    need = max(0, estimate.bytes - folder_bytes(folder))  # a resumed build has part of it written
    free = free_bytes(folder)
    log.info(
        "latent cache %s: %d faces, %d captions%s, %d condition maps stored: about %s to write, %s free",
        folder,
        estimate.faces,
        estimate.captions,
        "" if estimate.text else " (text not cached)",
        estimate.present_maps,
        format_bytes(need),
        format_bytes(free),
    )
    if need <= free:
        return
    options = ["data.cache_dir on a disk with more room"]
    if estimate.text:
        without = replace(estimate, text=False).bytes
        options.append(f"data.cache_text=false (about {format_bytes(without)}; captions encoded each step)")
    if DTYPES[estimate.dtype].itemsize > DTYPES["bfloat16"].itemsize:
        options.append(
            f"data.cache_dtype=bfloat16 (about {format_bytes(replace(estimate, dtype='bfloat16').bytes)})"
        )
    raise ValueError(
        f"latent cache {folder} needs about {format_bytes(need)} ({need} bytes) but its disk has "
        f"{format_bytes(free)} ({free} bytes) free, so it stopped before writing any. Set "
        + ", or ".join(options)
    )


# --- build ---------------------------------------------------------------------------------------


@torch.no_grad()
def _encode_shard(
    backbone: FluxBackbone,
    records: Sequence[FaceRecord],
    resolution: int,
    dtype: torch.dtype,
    text: bool,
    batch_size: int,
    num_workers: int,
    bar,
) -> dict:
    """Everything a shard holds for `records`, in their order (the loader does not shuffle). Only the
    present condition maps go through the VAE, `batch_size` maps at a time to bound its activations."""
    loader = DataLoader(FaceDataset(records, resolution), batch_size=batch_size, num_workers=num_workers)
    images, present, conds, labels, seqs, pooled = [], [], [], [], [], []
    for i, batch in enumerate(loader):
        images.append(encode_images(backbone, batch["image"]).to(dtype).cpu())
        mask = present_maps(batch["labels"])  # (b, 20)
        maps = batch["cond_maps"][mask]  # (k, 3, H, W), item after item
        for j in range(0, len(maps), batch_size):
            conds.append(encode_images(backbone, maps[j : j + batch_size]).to(dtype).cpu())
        present.append(mask)
        labels.append(batch["labels"].to(torch.uint8))
        if text:
            prompts = [c for r in records[i * batch_size : (i + 1) * batch_size] for c in r.captions]
            embeddings = encode_prompts(backbone, prompts)
            seqs.append(embeddings.sequence.to(dtype).cpu())
            pooled.append(embeddings.pooled.to(dtype).cpu())
        bar.update(len(batch["key"]))
    cond_present = torch.cat(present)
    tensors = {
        "image_latents": torch.cat(images),
        "cond_present": cond_present,
        "cond_latents": torch.cat(conds),  # never empty: every pixel's part has its map present
        "cond_offsets": _offsets(cond_present.sum(1)),
        "labels": torch.cat(labels),
    }
    if text:
        tensors["text_sequence"] = torch.cat(seqs)
        tensors["text_pooled"] = torch.cat(pooled)
        tensors["caption_offsets"] = _offsets(torch.tensor([len(r.captions) for r in records]))
    return tensors


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    """(n,) counts -> (n + 1,) int64 start rows, the last one the total."""
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    return offsets


def _write_common(
    backbone: FluxBackbone, resolution: int, store: torch.dtype, text: bool, folder: Path
) -> None:
    empty_map = torch.full((1, 3, resolution, resolution), -1.0)
    common = {"empty_latent": encode_images(backbone, empty_map)[0]}
    if text:
        empty_text = encode_prompts(backbone, [""])
        common["empty_text_sequence"] = empty_text.sequence[0]
        common["empty_text_pooled"] = empty_text.pooled[0]
    _atomic_save_tensors({k: v.to(store).cpu() for k, v in common.items()}, folder / "common.safetensors")


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
    text: bool = True,
) -> Path:
    """Encode `records` (already validated) once; returns the cache folder. Resumes an interrupted build.

    Before writing anything it estimates the folder's size (logged, and shown on the progress bar) and
    raises a ValueError when the disk lacks the room.
    key: the fingerprint naming the folder; by default over `records` and `problems`. A caller that
    validates lazily passes the fingerprint of the scan instead, so a later run finds the cache
    before validating again.
    text: cache every caption's T5 sequence and CLIP pooled embedding; without, items carry captions."""
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype {dtype!r} is not one of {tuple(DTYPES)}")
    key = key or fingerprint(records, backbone, resolution, dtype, problems, text)
    folder = cache_folder(cache_root, key)
    if is_complete(folder):
        return folder
    estimate = estimate_size(records, backbone, resolution, dtype, text, shard_size, problems)
    _check_room(folder, estimate)
    folder.mkdir(parents=True, exist_ok=True)
    store = DTYPES[dtype]
    meta = _meta(records, key, resolution, dtype, text, shard_size, problems)
    desc = f"latent cache (about {format_bytes(estimate.bytes)})"
    try:
        if not (folder / "common.safetensors").is_file():
            _write_common(backbone, resolution, store, text, folder)
        _atomic_write_json(meta, folder / "meta.json")
        done = [j for j in range(meta["num_shards"]) if (folder / _shard_name(j)).is_file()]
        initial = sum(min(shard_size, len(records) - j * shard_size) for j in done)
        with tqdm(total=len(records), initial=initial, desc=desc, disable=not progress) as bar:
            for j in range(meta["num_shards"]):
                if j in done:
                    continue
                part = records[j * shard_size : (j + 1) * shard_size]
                tensors = _encode_shard(backbone, part, resolution, store, text, batch_size, num_workers, bar)
                _atomic_save_tensors(tensors, folder / _shard_name(j))
    except OSError as err:
        err.add_note(
            f"while writing the latent cache {folder} (about {format_bytes(estimate.bytes)} in all): finished "
            "shards are kept and a rerun resumes; free space or set data.cache_dir elsewhere"
        )
        raise
    return folder


# --- read ----------------------------------------------------------------------------------------


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

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        j, r = divmod(row, self.shard_size)
        shard = self._shard(j)
        record = self.records[index]
        keep, drop_text = sample_dropout(self.dropout)
        c = caption_index(len(record.captions), self.train)
        item = {
            "image_latents": shard.file.get_slice("image_latents")[r],
            "cond_latents": self._cond_latents(shard, r, keep),
            "cond_keep": keep,
            "labels": shard.file.get_slice("labels")[r].long(),
            "caption": "" if drop_text else record.captions[c],
            "key": record.key,
        }
        if self.text and drop_text:
            item["text_sequence"] = self.common["empty_text_sequence"]
            item["text_pooled"] = self.common["empty_text_pooled"]
        elif self.text:
            row_c = int(shard.caption_offsets[r]) + c
            item["text_sequence"] = shard.file.get_slice("text_sequence")[row_c]
            item["text_pooled"] = shard.file.get_slice("text_pooled")[row_c]
        return item
