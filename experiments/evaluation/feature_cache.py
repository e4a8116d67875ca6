"""The real faces' evaluator features, computed once per data set and cached in a directory.

Two kinds share one path: our protocol's (`GenerationMetrics`: features and CLIP embeddings, in
CACHE/real_KEY.pt) and the paper protocol's (`PaperMetrics`: clean-fid features and CMMD embeddings, in
CACHE/paper_real_KEY.pt). KEY digests the images (path, size, mtime), the resolution and the evaluator
models' weight files (path, mtime), so a changed data set or model gets a new file.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path

import torch

from data_modules.layouts import FaceRecord
from facemogle.atomic import atomic_write
from facemogle.data_only import load_data
from facemogle.evaluators import EvaluatorConfig
from facemogle.evaluators.config import PaperEvaluatorConfig
from facemogle.metrics.paper import PaperMetrics, PaperReal
from facemogle.metrics.suite import GenerationMetrics, RealFeatures

REAL_KINDS = {
    GenerationMetrics: RealFeatures,
    PaperMetrics: PaperReal,
}  # metrics -> what its real images give


def real_cache_file(
    cache_dir: Path, records: list[FaceRecord], resolution: int, evaluators: EvaluatorConfig
) -> Path:
    h = _records_digest(records, resolution)
    h.update(f"{evaluators.features};".encode())
    model = evaluators.clip_path if evaluators.features == "clip" else evaluators.inception_path
    _digest_models(h, (model, evaluators.clip_path), "*.safetensors")
    return cache_dir / f"real_{h.hexdigest()[:16]}.pt"


def paper_cache_file(
    cache_dir: Path, records: list[FaceRecord], resolution: int, paper: PaperEvaluatorConfig
) -> Path:
    """Where the real faces' clean-fid features and CMMD embeddings are cached, keyed like `real_cache_file`."""
    h = _records_digest(records, resolution)
    _digest_models(h, (paper.inception_path, paper.cmmd_clip_path), "*")
    return cache_dir / f"paper_real_{h.hexdigest()[:16]}.pt"


def _records_digest(records: list[FaceRecord], resolution: int):
    h = hashlib.sha256()
    for r in records:
        stat = Path(r.image).stat()
        h.update(f"{Path(r.image).resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    h.update(f"{resolution};".encode())
    return h


def _digest_models(h, paths, pattern: str) -> None:
    """Each model's weight files (a directory's `pattern` files, or the file) by path and mtime into h."""
    for path in paths:
        if not path:
            h.update(b"none;")  # not Path(""): the working directory's mtime would change the key
            continue
        weights = sorted(Path(path).glob(pattern)) if Path(path).is_dir() else [Path(path)]
        for w in weights:
            h.update(f"{w.resolve()}:{w.stat().st_mtime_ns if w.exists() else 0};".encode())


def add(
    metrics: GenerationMetrics | PaperMetrics, images: torch.Tensor, batch: int, cache: Path | None, device
) -> None:
    """images (n, 3, H, W) in [0, 1]: their features from `cache` when it exists, else computed (and stored).

    The file holds a dict of the kind's fields (RealFeatures: features, clip; PaperReal: features, cmmd)."""
    kind = next(k for m, k in REAL_KINDS.items() if isinstance(metrics, m))
    names = [f.name for f in fields(kind)]
    if cache is not None and cache.is_file():
        stored = load_data(cache)
        metrics.add_real(kind(*(_to(stored[name], device) for name in names)))
        return
    parts = [metrics.extract_real(images[s : s + batch].to(device)) for s in range(0, len(images), batch)]
    real = kind(*(_cat([getattr(p, name) for p in parts]) for name in names))
    metrics.add_real(real)
    if cache is not None:  # runs evaluated in parallel (the ablation's SLURM array) share the cache
        stored = {name: _to(getattr(real, name), "cpu") for name in names}
        atomic_write(cache, lambda tmp: torch.save(stored, tmp))


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if parts[0] is None else torch.cat(parts)


def _to(t: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if t is None else t.to(device)
