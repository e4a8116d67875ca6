"""`model.init_from`: fine-tuning the paper's config from an imported official release on the FLUX.1-dev-shaped
backbone: its first step's loss is the imported model's on the same batch, and it trains, resumes and exports as
any run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning import Callback
from PIL import Image
from safetensors.torch import load_file

from data_modules.synthetic import write_synthetic
from experiments import export_official, import_official
from experiments import sample as sample_cli
from experiments.config.load import load_config
from experiments.runs.io import load_run
from experiments.training.build import build_backbone, build_denoiser
from experiments.training.run import train
from facemogle.backbone import save_flux
from facemogle.denoiser import flow_matching_loss
from facemogle.tiny_backbone import flux_dev_shaped
from tests.run_fixtures import KillAt
from tests.test_flux_dev_path import PAPER, sizes
from tests.test_import_official import official_lora
from tests.test_official import official_state_dict

pytestmark = pytest.mark.slow

FLOAT32 = ["backbone.dtype=float32", "trainer.precision=32-true", "trainer.accumulate_grad_batches=1"]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("init-from")
    write_synthetic(root / "data", 24, 64, 0)
    save_flux(flux_dev_shaped(seed=0), root / "FLUX.1-dev")
    torch.save(official_state_dict(), root / "mogle.pt")
    lora = official_lora(root / "release")
    import_official.main(
        [
            *("--lora", str(lora), "--mogle", str(root / "mogle.pt"), "--backbone", str(root / "FLUX.1-dev")),
            *("--out", str(root / "official"), "--convention", "training"),
        ]
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        yield root


def finetune(root, run, *extra):
    init = [f"model.init_from={root / 'official'}", "model.mogle.time_scale=1.0"]
    return load_config(PAPER, [*sizes(root, run), *FLOAT32, *init, *extra])


class FirstStepLosses(Callback):
    """The first training step's loss, and each reference denoiser's flow-matching loss on that step's batch,
    noise and timesteps (drawn as training_step draws them)."""

    def __init__(self, references: dict):
        self.references, self.losses = references, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step or self.losses:
            return
        b = pl_module.prepare(batch)
        g = pl_module.step_generator(batch_idx)
        noise = torch.randn(b.x0.shape, generator=g).to(b.x0)
        t = pl_module.config.timesteps.sample(b.x0.shape[0], generator=g).to(pl_module.device)
        with torch.no_grad():
            for name, denoiser in self.references.items():
                self.losses[name], _ = flow_matching_loss(
                    denoiser, b.x0, noise, t, b.text, pl_module.img_ids, b.cond, pl_module.config.guidance
                )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.setdefault("first step", outputs["loss"].detach())


def test_finetuning_from_an_imported_release_starts_from_its_weights_trains_resumes_and_exports(space):
    config = finetune(space, "full")
    imported = load_run(space / "official", ["backbone.dtype=float32"]).denoiser
    fresh = build_denoiser(
        build_backbone(config.backbone), load_config(PAPER, [*sizes(space, "x"), *FLOAT32]).model
    )
    record = FirstStepLosses({"imported": imported, "fresh": fresh})
    full = train(config, extra_callbacks=[record])
    losses = record.losses
    torch.testing.assert_close(losses["first step"], losses["imported"], atol=0, rtol=0)
    assert not torch.equal(losses["first step"], losses["fresh"])  # the weights really were loaded
    assert full.global_step == 4

    with pytest.raises(RuntimeError, match="killed"):
        train(finetune(space, "killed"), extra_callbacks=[KillAt(3)])
    hidden = space / "official-moved"
    (space / "official").rename(hidden)  # a resumed run reads its checkpoint, not init_from
    try:
        resumed = train(finetune(space, "killed"), resume=True)
    finally:
        hidden.rename(space / "official")
    assert resumed.global_step == 4
    start = load_file(space / "official" / "export" / "mogle.safetensors")
    for file in ("mogle.safetensors", "lora/pytorch_lora_weights.safetensors"):
        a, b = (load_file(space / run / "export" / file) for run in ("full", "killed"))
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    trained = load_file(space / "full" / "export" / "mogle.safetensors")
    assert start.keys() == trained.keys() and any(
        not torch.equal(start[k], trained[k]) for k in start
    )  # it trained
    assert load_config(space / "full" / "export" / "config.yaml").model.init_from == str(space / "official")


def test_a_run_whose_gate_differs_from_its_init_is_an_error_naming_the_key(space):
    config = finetune(space, "mismatch", "model.mogle.time_scale=1000.0")
    with pytest.raises(ValueError, match=r"its model.mogle.time_scale is 1.0, this run's 1000.0"):
        build_denoiser(build_backbone(config.backbone), config.model)


def test_a_run_trained_here_goes_to_the_official_format_and_back_sampling_bit_identical_images(space):
    """Fine-tuned from the sampler-convention import (gate time scale 1000, what the official class holds),
    written with export_official, imported again: the same images, bit for bit."""
    root = space
    import_official.main(
        [
            *("--lora", str(root / "release" / "pytorch_lora_weights.safetensors")),
            *("--mogle", str(root / "mogle.pt"), "--backbone", str(root / "FLUX.1-dev")),
            *("--out", str(root / "official-sampler")),
        ]
    )
    init = [f"model.init_from={root / 'official-sampler'}", "trainer.max_steps=2"]
    train(load_config(PAPER, [*sizes(root, "trained"), *FLOAT32, *init]))
    export_official.main(["--run", str(root / "trained"), "--out", str(root / "handed-over")])
    import_official.main(
        [
            *("--lora", str(root / "handed-over" / "pytorch_lora_weights.safetensors")),
            *("--mogle", str(root / "handed-over" / "mogle.pt"), "--backbone", str(root / "FLUX.1-dev")),
            *("--out", str(root / "back"), "backbone.dtype=float32", "data.resolution=64"),
        ]
    )
    images = []
    for run in ("trained", "back"):
        out = root / "samples" / run
        argv = [
            "--run",
            str(root / run),
            "--prompt",
            "She smiles.",
            "--mask",
            str(root / "data" / "mask" / "0.png"),
        ]
        sample_cli.main([*argv, "--steps", "2", "--out", str(out)])
        images.append(np.asarray(Image.open(next(out.glob("*.png")))))
    assert np.array_equal(images[0], images[1])
    started = load_file(root / "official-sampler" / "export" / "mogle.safetensors")
    trained = load_file(root / "trained" / "export" / "mogle.safetensors")
    assert any(not torch.equal(started[k], trained[k]) for k in started)  # not the release handed back
