"""Two CPU processes (gloo) training with DDP through experiments.training.run, launched by Lightning."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.generation_eval import GenerationEvalConfig, GenerationEvaluator
from data_modules.datamodule import FaceDataModule
from experiments.config.load import to_yaml
from experiments.training.build import build_module
from facemogle.metrics.suite import build_generation_metrics
from tests.run_fixtures import tiny_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # two processes


def test_two_ddp_processes_end_with_the_same_weights_and_one_synced_metric_result(
    workspace, evaluators, tmp_path
):
    cfg = tiny_config(
        workspace,
        tmp_path / "ddp",
        4,
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "eval.enabled=true",
        f"eval.evaluators.clip_path={evaluators / 'clip'}",
        f"eval.evaluators.parser_path={evaluators / 'parser'}",
        "eval.callback.every_n_steps=4",
        "eval.callback.on_validation=false",
        "eval.callback.batch_size=2",  # the same batches in one process as in two
        "eval.callback.num_grid=0",
        "eval.callback.gate_maps=0",
        "eval.metrics.kid_subset_size=4",
        "data.eval_subset_size=4",
        "data.split.val_fraction=0.2",
        "train.sample.steps=2",
    )
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "tests.ddp_worker", str(tmp_path / "config.yaml"), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    final, other = ranks[0]["final"], ranks[1]["final"]
    assert final.keys() == other.keys() and any(k.startswith("denoiser.mogle.") for k in final)
    assert any("lora_" in k for k in final)
    for key in final:
        assert torch.equal(final[key], other[key]), key
    assert any(not torch.equal(final[k], ranks[0]["initial"][k]) for k in final)  # it trained

    metrics = ranks[0]["metrics"]["text+mask"]
    assert metrics == ranks[1]["metrics"]["text+mask"] or _close(metrics, ranks[1]["metrics"]["text+mask"], 0)
    # the synced value is the one a single process gets on the whole subset with the same weights
    assert _close(metrics, single_process_metrics(cfg, final), 1e-4)


def single_process_metrics(cfg, weights: dict[str, torch.Tensor]) -> dict[str, float]:
    module = build_module(cfg)
    assert not module.load_state_dict(weights, strict=False).unexpected_keys
    e = cfg.eval
    evaluator = GenerationEvaluator(
        lambda: build_generation_metrics(e.evaluators, e.metrics),
        GenerationEvalConfig(**{**vars(e.callback), "on_validation": True}),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[evaluator],
    )
    trainer.validate(module, datamodule=FaceDataModule(cfg.data, module.backbone), verbose=False)
    return evaluator.last["text+mask"]


def _close(a: dict[str, float], b: dict[str, float], tolerance: float) -> bool:
    assert a.keys() == b.keys()
    return all(
        (math.isnan(a[k]) and math.isnan(b[k]))
        or math.isclose(a[k], b[k], rel_tol=tolerance, abs_tol=tolerance)
        for k in a
    )
