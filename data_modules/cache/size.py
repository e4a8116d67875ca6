"""How large a cache will be, and whether the disk has the room, before anything is encoded."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from data_modules.cache.key import CACHE_VERSION, DTYPES, _json
from data_modules.dataset import load_labels
from data_modules.layouts import FaceRecord, Problem
from facemogle.backbone import FluxBackbone
from facemogle.face_parts import NUM_CONDITION_MAPS, present_maps

log = logging.getLogger(__name__)

_HEADER_BYTES = 128  # allowance per tensor for its entry in a safetensors file's JSON header
_FINGERPRINT_CHARS = 64  # a sha256 hex digest, as meta.json stores it
PRESENT_SAMPLE = 256  # label maps read to count a large data set's present condition maps


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
