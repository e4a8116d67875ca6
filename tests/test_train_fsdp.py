"""Two CPU processes (gloo) training with FSDP2 (trainer.strategy=fsdp) through experiments.training.run, against
DDP on the same data; a killed FSDP run resumed from its sharded checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader

from experiments.config.schema import TrainerConfig
from experiments.training.strategy import FSDP2Strategy, make_strategy
from tests.run_fixtures import launch, records, tiny_config
from tests.test_train_ddp import _close

STEPS, KILL_AT = 7, 4  # checkpoints every 3 steps: the killed run resumes from step 3


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The run directories (NAME/) and the workers' records (NAME-out/)."""
    return tmp_path_factory.mktemp("fsdp")


@pytest.fixture(scope="module")
def runs(workspace, evaluators, root):
    """ddp and fsdp: 7 uninterrupted steps, sampling and scoring 4 faces at step 4; killed: fsdp killed at
    step 4, then resumed. The fsdp runs recompute activations in backward (backbone.gradient_checkpointing)."""
    two = ("trainer.accelerator=cpu", "trainer.devices=2", "data.split.val_fraction=0.2")
    fsdp = (*two, "trainer.strategy=fsdp", "backbone.gradient_checkpointing=true")
    scored = (
        "eval.enabled=true",
        f"eval.evaluators.clip_path={evaluators / 'clip'}",
        f"eval.evaluators.parser_path={evaluators / 'parser'}",
        "eval.callback.every_n_steps=4",
        "eval.callback.on_validation=false",
        "eval.callback.batch_size=2",
        "eval.callback.num_grid=0",
        "eval.callback.gate_maps=0",
        "eval.metrics.kid_subset_size=4",
        "data.eval_subset_size=4",
        "train.sample.steps=2",
    )
    cfgs = {
        "ddp": tiny_config(workspace, root / "ddp", STEPS, *two, "trainer.strategy=ddp", *scored),
        "fsdp": tiny_config(workspace, root / "fsdp", STEPS, *fsdp, *scored),
        "killed": tiny_config(workspace, root / "killed", STEPS, *fsdp),
    }
    for name in ("ddp", "fsdp"):
        done = launch(cfgs[name], root / f"{name}-out")
        assert done.returncode == 0, done.stderr[-4000:]
    killed = launch(cfgs["killed"], root / "killed-out", "--kill-at", str(KILL_AT))
    assert killed.returncode != 0 and "killed" in killed.stderr
    resumed = launch(cfgs["killed"], root / "killed-out", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    return {name: records(root / f"{name}-out") for name in cfgs}


@pytest.mark.slow  # two processes, four runs
def test_fsdp_on_two_processes_trains_like_ddp_and_both_ranks_gather_the_same_weights(runs, root):
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    assert [r["world_size"] for r in fsdp] == [2, 2]
    final = fsdp[0]["final"]
    assert any("lora_" in k for k in final) and any(k.startswith("denoiser.mogle.") for k in final)
    for key in final:
        assert torch.equal(final[key], fsdp[1]["final"][key]), key
    assert any(not torch.equal(final[k], fsdp[0]["initial"][k]) for k in final)  # it trained
    # The same data, noise and update as DDP; only the order of float sums differs (reduce-scatter of
    # gradient shards vs all-reduce, the clipping norm summed over shards): ~1e-7 relative per step in fp32.
    assert final.keys() == ddp[0]["final"].keys()
    for key in final:
        torch.testing.assert_close(final[key], ddp[0]["final"][key], rtol=1e-5, atol=1e-6)
    for rank in (0, 1):
        assert fsdp[rank]["losses"].keys() == set(range(1, STEPS + 1))
        torch.testing.assert_close(fsdp[rank]["losses"], ddp[rank]["losses"], rtol=1e-5, atol=0)
    # sampling with the sharded model: the metrics DDP gets with the same weights at step 4
    assert _close(fsdp[0]["metrics"]["text+mask"], ddp[0]["metrics"]["text+mask"], 1e-4)
    assert fsdp[0]["metrics"] == fsdp[1]["metrics"] or _close(
        fsdp[0]["metrics"]["text+mask"], fsdp[1]["metrics"]["text+mask"], 0
    )
    # rank 0 exports the gathered weights
    exports = [root / run / "export" for run in ("fsdp", "ddp")]
    for file in ("mogle.safetensors", "lora/pytorch_lora_weights.safetensors"):
        a, b = (load_file(e / file) for e in exports)
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def logged(run_dir: Path, key: str) -> dict[int, float]:
    """{step: value} of a metric in rank 0's CSV log."""
    rows = csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open())
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


@pytest.mark.slow  # two processes, four runs
def test_fsdp_logs_the_gradient_norm_ddp_logs(runs, root):
    """The norm over the DTensor gradient shards is the whole gradient's, as DDP computes it."""
    fsdp, ddp = (logged(root / run, "train/grad_norm") for run in ("fsdp", "ddp"))
    assert fsdp.keys() == ddp.keys() and len(fsdp) == STEPS
    for step, norm in ddp.items():
        assert norm > 0 and fsdp[step] == pytest.approx(norm, rel=1e-5), step


@pytest.mark.slow  # two processes, four runs
def test_each_fsdp_rank_holds_half_of_every_frozen_transformer_weight(runs):
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    held = [r["held"] for r in fsdp]
    assert held[0].keys() == held[1].keys() and len(held[0]) > 100
    for name, (mine, whole) in held[0].items():
        other, _ = held[1][name]
        assert mine + other == whole, name  # split, not replicated
        assert abs(mine - other) <= whole / 4, name  # dim 0 split in two: (n+1)//2 and n//2 rows
    total = sum(whole for _, whole in held[0].values())
    assert sum(mine for mine, _ in held[0].values()) == pytest.approx(total / 2, rel=0.01)
    assert ddp[0]["held"] and all(mine == whole for mine, whole in ddp[0]["held"].values())  # DDP replicates


@pytest.mark.slow  # two processes, four runs
def test_a_killed_fsdp_run_resumes_from_its_sharded_checkpoint_like_an_uninterrupted_one(runs, root):
    checkpoint = root / "killed" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir()
    assert {"meta.pt", ".metadata", "__0_0.distcp", "__1_0.distcp"} <= {p.name for p in checkpoint.iterdir()}
    keys = FileSystemReader(checkpoint).read_metadata().state_dict_metadata.keys()
    weights = [k.removeprefix("state_dict.") for k in keys if k.startswith("state_dict.")]
    assert weights and all("lora_" in k or k.startswith("denoiser.mogle.") for k in weights)  # trainable only
    assert any(k.startswith("optimizer_0.state.") for k in keys)

    resumed, full = runs["killed"], runs["fsdp"]
    assert [r["global_step"] for r in resumed] == [STEPS, STEPS]
    for rank in (0, 1):
        assert resumed[rank]["losses"].keys() == set(range(KILL_AT, STEPS + 1))  # from step 3's checkpoint
        for step, loss in resumed[rank]["losses"].items():
            assert loss == pytest.approx(full[rank]["losses"][step], rel=1e-6), step
    for key, value in full[0]["final"].items():
        torch.testing.assert_close(resumed[0]["final"][key], value, rtol=1e-6, atol=1e-7)


def test_trainer_strategy_fsdp_shards_over_every_process():
    strategy = make_strategy(TrainerConfig(devices=4, num_nodes=2, strategy="fsdp"))
    assert isinstance(strategy, FSDP2Strategy)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (8, 1)


def test_ddp_with_gradient_accumulation_finds_unused_parameters_instead_of_a_static_graph():
    # a static graph fails under the no_sync of accumulation (pytorch/pytorch#143580)
    accumulating = make_strategy(TrainerConfig(devices=2, strategy="ddp", accumulate_grad_batches=2))
    assert accumulating._ddp_kwargs == {"find_unused_parameters": True}
    assert make_strategy(TrainerConfig(devices=2, strategy="ddp"))._ddp_kwargs == {"static_graph": True}
