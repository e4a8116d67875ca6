import pytest
import torch
from safetensors.torch import load_file

from data_modules.cache import read_meta
from experiments.config import load_config
from experiments.training import train
from facemogle.backbone import TinyFluxConfig, save_flux, tiny_flux
from tests.run_fixtures import CountCalls, KillAt, RecordGuidance, write_workspace


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return write_workspace(tmp_path_factory.mktemp("train"))


def config(root, run, steps, *extra):
    return load_config(
        "experiments/configs/tiny.yaml",
        [
            f"run_dir={root / run}",
            f"backbone.path={root / 'flux'}",
            f"data.root={root / 'data'}",
            f"data.cache_dir={root / 'cache'}",
            "data.resolution=32",
            "data.batch_size=4",
            f"trainer.max_steps={steps}",
            "trainer.checkpoint_every_n_steps=3",
            "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false",
            "logger.kind=csv",
            "eval.enabled=false",
            *extra,
        ],
    )


def test_a_killed_and_resumed_run_ends_like_an_uninterrupted_one(setup):
    # 20 training items in batches of 4: 5 steps an epoch, so the kill at step 4 is mid-epoch.
    full = train(config(setup, "full", 7))
    with pytest.raises(RuntimeError, match="killed"):
        train(config(setup, "killed", 7), extra_callbacks=[KillAt(4)])
    resumed = train(config(setup, "killed", 7), resume=True)
    assert resumed.global_step == full.global_step == 7
    # checkpoints every 3 steps, and last.ckpt at the end all the same
    assert torch.load(setup / "full" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7
    torch.testing.assert_close(resumed.callback_metrics["train/loss"], full.callback_metrics["train/loss"])
    a, b = (load_file(setup / run / "export" / "mogle.safetensors") for run in ("full", "killed"))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_a_run_writes_checkpoints_export_and_metrics(setup):
    train(config(setup, "outputs", 3))
    run = setup / "outputs"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (
        run / "checkpoints" / "step-000003.ckpt"
    ).is_file()
    assert (run / "export" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert "train/loss" in (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert all("lora_" in k or k.startswith("denoiser.mogle.") for k in ckpt["state_dict"])


def test_a_run_without_cached_text_encodes_each_batch_captions(setup):
    t5 = CountCalls(lambda module: module.backbone.text_encoder_2)
    extra = ("data.cache_text=false", "trainer.val_check_interval=2")
    trainer = train(config(setup, "no-text", 2, *extra), extra_callbacks=[t5])
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])
    assert not read_meta(trainer.datamodule.cache_folder).text
    assert t5.calls >= 3  # two training batches and the validation batches, after the cache was built


def test_a_guidance_distilled_backbone_trains_and_validates_at_train_guidance(setup):
    """FLUX.1-dev embeds a guidance scale: training and the validation loss pass train.guidance to it."""
    save_flux(tiny_flux(TinyFluxConfig(guidance_embeds=True), seed=0), setup / "flux-guidance")
    record = RecordGuidance()
    cfg = config(
        setup,
        "guidance",
        2,
        f"backbone.path={setup / 'flux-guidance'}",
        "train.guidance=1.5",
        "trainer.val_check_interval=2",
    )
    trainer = train(cfg, extra_callbacks=[record])
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])
    assert record.seen["train"] and set(record.seen["train"]) == {1500.0}
    assert record.seen["validate"] and set(record.seen["validate"]) == {1500.0}


@pytest.fixture(scope="module")
def evaluators(setup):
    """Untrained small evaluator models, saved like `make evaluators` saves the trained ones."""
    from facemogle.evaluators import build_small_clip, build_small_parser, save_clip, save_face_parser
    from facemogle.tiny_tokenizers import build_clip_tokenizer

    save_face_parser(build_small_parser(), setup / "evaluators" / "parser")
    save_clip(build_small_clip(build_clip_tokenizer()), setup / "evaluators" / "clip")
    return setup / "evaluators"


def test_an_offline_wandb_run_keeps_metrics_and_images_in_the_run_directory(setup, evaluators, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = config(
        setup,
        "wandb",
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
    runs = list((setup / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))  # the metric history
    media = list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert media, "sample grid / gate maps were not logged"


def test_the_sample_cli_reproduces_the_runs_own_samples_in_a_fresh_process(setup, tmp_path):
    import shutil
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from data_modules.layouts import read_label_map

    trainer = train(config(setup, "sampled", 3))
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for i in (0, 1):
        shutil.copy(setup / "data" / "mask" / f"{i}.png", masks_dir / f"{i}.png")
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
            str(setup / "sampled"),
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
