"""The cache's key: a fingerprint of the data and the encoders, the folder it names, and its files' writers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from data_modules.layouts import FaceRecord, Problem
from facemogle.atomic import atomic_write, atomic_write_text
from facemogle.backbone import FluxBackbone

CACHE_VERSION = 2  # 2: absent condition maps share common.safetensors' empty_latent; text optional
_SAMPLE = 1 << 16  # elements hashed from each large tensor, besides its exact sum
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
