import csv

import pytest
import torch
from safetensors.torch import load_file

from data_modules.cache import read_meta
from experiments.training.run import train
from facemogle.backbone import save_flux
from facemogle.tiny_backbone import TinyFluxConfig, tiny_flux
from tests.run_fixtures import CountCalls, KillAt, RecordGuidance, tiny_config

# train/loss at the last of 3 steps of tiny.yaml on the shared workspace, float32 on one CPU thread, by
# train.mask_guidance: the paper's loss (1) recorded after the SeedSequence seeds (bed9d05), 2.5 when model
# guidance came (facemogle.denoiser). A refactor keeps them; re-record one only for an intended change.
GOLDEN_LOSS = {1.0: 1.5031358003616333, 2.5: 1.5034418106079102}


@pytest.fixture
def one_thread():
    """One intra-op thread: float sums in a fixed order, whatever the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("mask_guidance", GOLDEN_LOSS)
def test_three_steps_of_the_tiny_config_end_at_the_recorded_loss(
    workspace, tmp_path, one_thread, mask_guidance
):
    extra = f"train.mask_guidance={mask_guidance}"
    cfg = tiny_config(workspace, tmp_path / "golden", 3, f"data.cache_dir={tmp_path / 'cache'}", extra)
    trainer = train(cfg)
    assert trainer.global_step == 3
    loss = trainer.callback_metrics["train/loss"].item()
    assert loss == pytest.approx(GOLDEN_LOSS[mask_guidance], abs=1e-6)


def test_a_killed_and_resumed_run_ends_like_an_uninterrupted_one(workspace, tmp_path):
    # 20 training items in batches of 4: 5 steps an epoch, so the kill at step 4 is mid-epoch.
    full = train(tiny_config(workspace, tmp_path / "full", 7))
    with pytest.raises(RuntimeError, match="killed"):
        train(tiny_config(workspace, tmp_path / "killed", 7), extra_callbacks=[KillAt(4)])
    resumed = train(tiny_config(workspace, tmp_path / "killed", 7), resume=True)
    assert resumed.global_step == full.global_step == 7
    # checkpoints every 3 steps, and last.ckpt at the end all the same
    assert torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    a, b = (load_file(tmp_path / run / "export" / "mogle.safetensors") for run in ("full", "killed"))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_a_run_writes_checkpoints_export_and_metrics(workspace, tmp_path):
    train(tiny_config(workspace, tmp_path / "outputs", 3))
    run = tmp_path / "outputs"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (
        run / "checkpoints" / "step-000003.ckpt"
    ).is_file()
    assert (run / "export" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert "train/loss" in (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"] and all(
        "lora_" in k or k.startswith("denoiser.mogle.") for k in ckpt["state_dict"]
    )


def test_the_gate_balance_loss_is_logged_and_only_a_positive_coefficient_trains_on_it(workspace, tmp_path):
    runs = {c: tmp_path / f"balance{c}" for c in (0.0, 5.0)}
    for coefficient, run in runs.items():
        train(tiny_config(workspace, run, 1, f"train.gate_balance={coefficient}"))
    rows = {}
    for coefficient, run in runs.items():
        with (run / "logs" / "version_0" / "metrics.csv").open() as f:
            rows[coefficient] = next(r for r in csv.DictReader(f) if r["train/loss"])
    assert float(rows[0.0]["train/gate_balance_loss"]) >= 1.0  # 1 only with a perfectly even load
    assert rows[0.0]["train/loss"] == rows[5.0]["train/loss"]  # the flow-matching loss, before the update
    gates = {c: load_file(run / "export" / "mogle.safetensors") for c, run in runs.items()}
    assert not torch.equal(gates[0.0]["gate.mlp.2.weight"], gates[5.0]["gate.mlp.2.weight"])
    assert torch.equal(gates[0.0]["experts.w1"], gates[5.0]["experts.w1"])  # the loss reads the gate only


def test_a_run_without_cached_text_encodes_each_batch_captions(workspace, tmp_path):
    t5 = CountCalls(lambda module: module.backbone.text_encoder_2)
    extra = ("data.cache_text=false", "trainer.val_check_interval=2")
    trainer = train(tiny_config(workspace, tmp_path / "no-text", 2, *extra), extra_callbacks=[t5])
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])
    assert not read_meta(trainer.datamodule.cache_folder).text
    assert t5.calls >= 3  # two training batches and the validation batches, after the cache was built


def test_a_guidance_distilled_backbone_trains_and_validates_at_train_guidance(workspace, tmp_path):
    """FLUX.1-dev embeds a guidance scale: training and the validation loss pass train.guidance to it."""
    save_flux(tiny_flux(TinyFluxConfig(guidance_embeds=True), seed=0), tmp_path / "flux-guidance")
    record = RecordGuidance()
    cfg = tiny_config(
        workspace,
        tmp_path / "guidance",
        2,
        f"backbone.path={tmp_path / 'flux-guidance'}",
        "train.guidance=1.5",
        "trainer.val_check_interval=2",
    )
    trainer = train(cfg, extra_callbacks=[record])
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])
    assert record.seen["train"] and set(record.seen["train"]) == {1500.0}
    assert record.seen["validate"] and set(record.seen["validate"]) == {1500.0}


def test_an_offline_wandb_run_keeps_metrics_and_images_in_the_run_directory(
    workspace, evaluators, monkeypatch, tmp_path
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_config(
        workspace,
        tmp_path / "wandb",
        2,
        "logger.kind=wandb",
        "eval.enabled=true",
        f"eval.evaluators.clip_path={evaluators / 'clip'}",
        f"eval.evaluators.parser_path={evaluators / 'parser'}",
        "eval.callback.every_n_steps=2",
        "eval.callback.on_validation=false",
        "eval.callback.modes=[text+mask]",
        "eval.callback.num_grid=2",
        "eval.metrics.kid_subset_size=4",
        "data.eval_subset_size=4",
        "data.split.val_fraction=0.2",
        "train.sample.steps=2",
    )
    trainer = train(cfg)
    assert "eval/text+mask/mask_miou" in trainer.callback_metrics
    runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))  # the metric history
    media = list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert media, "sample grid / gate maps were not logged"


def test_the_sample_cli_reproduces_the_runs_own_samples_in_a_fresh_process(workspace, tmp_path):
    import shutil
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from data_modules.face_files import read_label_map

    trainer = train(tiny_config(workspace, tmp_path / "sampled", 3))
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for i in (0, 1):
        shutil.copy(workspace / "data" / "mask" / f"{i}.png", masks_dir / f"{i}.png")
    masks = torch.stack(
        [torch.from_numpy(read_label_map(masks_dir / f"{i}.png").astype(np.int64)) for i in (0, 1)]
    )
    prompt = "She has long black straight hair."
    own = trainer.lightning_module.generate([prompt] * 2, masks, seed=0, steps=2).images
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.sample",
            "--run",
            str(tmp_path / "sampled"),
            "--masks",
            str(masks_dir),
            "--prompt",
            prompt,
            "--seed",
            "0",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    for i in (0, 1):
        cli = np.asarray(Image.open(out / f"{i}_seed{i}.png"), dtype=np.float32) / 255
        expected = own[i].permute(1, 2, 0).numpy()
        assert cli.shape == expected.shape
        assert np.abs(cli - expected).max() <= 1 / 255 + 1e-6  # identical up to the PNG's 8-bit rounding
