"""Two CPU ranks (gloo) updating halves of the data give the single-process metric values: ours
(GenerationMetrics) and the paper protocol's (PaperMetrics, on its small stand-in models)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from callbacks.generation_eval import share
from facemogle.evaluators import PaperEvaluatorConfig, save_clip
from facemogle.evaluators.standins import write_standins
from facemogle.metrics import GenerationMetrics, MetricsConfig, build_paper_metrics
from tests.test_eval_metrics import PaletteParser, palette_images, random_labels, tiny_clip

N, WORLD = 24, 2
pytestmark = pytest.mark.slow  # two processes


def data():
    labels = random_labels(N, seed=3)
    real = palette_images(labels)
    g = torch.Generator().manual_seed(4)
    generated = (real + 0.3 * torch.randn(real.shape, generator=g)).clamp(0, 1)  # (N, 3, 32, 32)
    captions = [f"a face with {'black' if i % 2 else 'blond'} hair, number {i}" for i in range(N)]
    return real, generated, labels, captions


def run_metrics(indices: range) -> dict[str, float]:
    real, generated, labels, captions = data()
    clip = tiny_clip(seed=0)
    metrics = GenerationMetrics(clip, clip=clip, parser=PaletteParser(), config=MetricsConfig(kid_subsets=10))
    for start in range(indices.start, indices.stop, 5):
        part = slice(start, min(start + 5, indices.stop))
        metrics.update_real(real[part])
        metrics.update(generated[part], captions[part], labels[part])
    return metrics.compute()


def run_paper_metrics(indices: range, models: str) -> dict[str, float]:
    """The paper protocol's columns on the stand-ins written under `models` (and the tiny CLIP)."""
    real, generated, _, captions = data()
    root = Path(models)
    config = PaperEvaluatorConfig(
        inception_path=str(root / "inception-2015-12-05.pt"),
        cmmd_clip_path=str(root / "clip"),
        text_clip_path=str(root / "clip"),
        dino_path=str(root / "dino"),
        image_reward_path=str(root / "image_reward"),
        kid_seed=3,
        dino_splice=True,
    )
    metrics = build_paper_metrics(config)
    for start in range(indices.start, indices.stop, 5):
        part = slice(start, min(start + 5, indices.stop))
        metrics.add_real(metrics.extract_real(real[part]))
        metrics.update(generated[part], captions[part], real[part])
    return metrics.compute()


def _rank(rank: int, init_file: str, out: str, which: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        mine = share(N, rank, WORLD)
        values = run_metrics(mine) if which == "ours" else run_paper_metrics(mine, which)
        torch.save(values, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def assert_ranks_match(out: Path, single: dict[str, float]) -> None:
    for rank in range(WORLD):
        distributed = torch.load(out / f"rank{rank}.pt")
        assert distributed.keys() == single.keys()
        for key, want in single.items():
            got = distributed[key]
            assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-6 * max(1.0, abs(want)), (
                key
            )


def test_two_ddp_ranks_give_the_single_process_values(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path), "ours"), nprocs=WORLD, join=True)
    single = run_metrics(range(N))
    assert 0 < single["mask_miou"] < 1 and single["fid"] > 0 and single["cmmd"] > 0
    assert_ranks_match(tmp_path, single)


def test_two_ddp_ranks_give_the_single_process_paper_values(tmp_path):
    models = write_standins(tmp_path / "models", image_size=32)
    save_clip(tiny_clip(seed=0), models / "clip")
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(out), str(models)), nprocs=WORLD, join=True)
    single = run_paper_metrics(range(N), str(models))
    assert set(single) == {
        "fid",
        "kid",
        "cmmd",
        "mask",
        "mask_per_image",
        "mask_splice_per_image",
        "text",
        "image_reward",
    }
    assert single["fid"] > 0 and single["cmmd"] > 0 and single["mask_per_image"] > 0
    assert_ranks_match(out, single)
