"""Encoding the data with the frozen backbone into the cache's shards; an interrupted build resumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_modules.cache.key import (
    DTYPES,
    _atomic_save_tensors,
    _atomic_write_json,
    _shard_name,
    cache_folder,
    fingerprint,
    is_complete,
)
from data_modules.cache.size import _check_room, _meta, estimate_size, format_bytes
from data_modules.dataset import FaceDataset
from data_modules.layouts import FaceRecord, Problem
from facemogle.backbone import FluxBackbone
from facemogle.encode import encode_images, encode_prompts
from facemogle.face_parts import present_maps


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
    vae = {"device": backbone.vae.device, "dtype": backbone.vae.dtype}
    for i, batch in enumerate(loader):
        images.append(encode_images(backbone, batch["image"], **vae).to(dtype).cpu())
        mask = present_maps(batch["labels"])  # (b, 20)
        maps = batch["cond_maps"][mask]  # (k, 3, H, W), item after item
        for j in range(0, len(maps), batch_size):
            conds.append(encode_images(backbone, maps[j : j + batch_size], **vae).to(dtype).cpu())
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
