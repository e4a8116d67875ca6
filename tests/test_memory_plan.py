"""The memory plan (facemogle.memory_plan, experiments.plan_memory): exact weights of FLUX.1-dev from its sizes,
a prediction that agrees with a step really run, and the start-up refusal of a step that cannot fit."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from experiments import plan_memory as plan_cli
from experiments.config.load import load_config
from experiments.training import build, run
from experiments.training.build import build_module
from experiments.training.memory import architecture, check_memory, memory_settings
from facemogle.backbone import save_flux
from facemogle.denoiser import flow_matching_loss
from facemogle.lit_module import _prodigy
from facemogle.memory_plan import plan_memory
from facemogle.memory_sizes import Architecture, GiB, MemorySettings
from facemogle.memory_trace import FrozenAwareTracker, step_peak
from facemogle.memory_weights import frozen_weight_bytes
from facemogle.tiny_backbone import FLUX_DEV_SHAPED, tiny_flux

PAPER = "experiments/configs/flux_mmcelebahq.yaml"
# FLUX.1-dev's shape with more blocks than the three traces hold, so the prediction extrapolates
DEEPER = replace(FLUX_DEV_SHAPED, num_layers=4, num_single_layers=6)


def test_flux_dev_weights_are_counted_from_its_sizes_at_each_quantisations_bytes():
    arch, settings = Architecture(), MemorySettings(text_path="cpu")
    bf16 = frozen_weight_bytes(arch, settings)
    # FLUX.1-dev's transformer holds 11.90B parameters; CLIP-L's text model 123M and the VAE 84M beside it
    assert 11.9e9 * 2 < bf16 < 12.2e9 * 2
    int8 = frozen_weight_bytes(arch, replace(settings, transformer_quantization="int8"))
    nf4 = frozen_weight_bytes(arch, replace(settings, transformer_quantization="nf4"))
    assert 0.5 < int8 / bf16 < 0.55 and 0.28 < nf4 / bf16 < 0.32
    with_t5 = frozen_weight_bytes(arch, replace(settings, text_path="cached"))
    assert 4.7e9 * 2 < with_t5 - bf16 < 4.8e9 * 2  # T5-XXL's encoder, 4.76B parameters


def test_the_plan_reads_a_backbone_directorys_sizes_and_falls_back_to_flux_dev(tmp_path):
    save_flux(tiny_flux(), tmp_path / "tiny")
    arch, source = architecture(tmp_path / "tiny")
    assert arch.transformer["num_layers"] == 2 and str(tmp_path) in source
    arch, source = architecture(tmp_path / "absent")
    assert arch == Architecture() and "FLUX.1-dev's sizes" in source


def paper_on(path, *extra: str):
    return load_config(
        PAPER,
        [f"backbone.path={path}", "data.resolution=64", "trainer.accelerator=cpu", *extra],
    )


@pytest.mark.slow  # about 85 s a base on 2 busy cores
@pytest.mark.parametrize("base", ["none", "int8", "nf4"])
def test_a_training_step_of_the_flux_dev_shaped_backbone_uses_what_was_predicted_within_10_percent(
    tmp_path, base
):
    save_flux(tiny_flux(DEEPER), tmp_path / "flux")
    config = paper_on(tmp_path / "flux", f"backbone.quantization.transformer={base}")
    settings = memory_settings(config)
    assert settings.precision == "bf16-true" and settings.gradient_checkpointing and settings.batch == 4
    arch, _ = architecture(tmp_path / "flux")
    plan = plan_memory(arch, settings)
    predicted = plan.training.total

    module = build_module(config).to(torch.bfloat16)  # what Lightning's bf16-true does to the module
    module.img_ids = module.img_ids.float()
    optimizer = _prodigy(module.trainable_parameters(), config.train.optim)
    b, l, d = config.data.batch_size, arch.image_tokens(64), arch.transformer["in_channels"]
    batch = {
        "image_latents": torch.randn(b, l, d, dtype=torch.bfloat16),
        "cond_latents": torch.randn(b, 20, l, d, dtype=torch.bfloat16),
        "caption": ["She has blond wavy hair."] * b,  # data.cache_text false: T5 encodes every step
    }
    tracker = FrozenAwareTracker()
    tracker.track_external(module, optimizer, batch["image_latents"], batch["cond_latents"])
    with tracker:
        for _ in range(2):  # the second step holds the optimizer state
            x = module.prepare(batch)
            noise, t = torch.randn_like(x.x0), torch.rand(b)
            loss, _ = flow_matching_loss(
                module.denoiser, x.x0, noise, t, x.text, module.img_ids, x.cond, config.train.guidance
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            del x, loss, noise, t  # a training step's tensors die with it, before the next batch is encoded
            tracker.reset_mod_stats()  # the tracker follows one call of each module; its peak stays
    peak = step_peak(tracker)
    measured = peak["Total"]
    assert abs(predicted - measured) / measured < 0.10, (plan.training, peak)


def test_training_stops_before_loading_the_backbone_when_the_step_cannot_fit(tmp_path, monkeypatch):
    save_flux(tiny_flux(), tmp_path / "tiny")
    config = load_config(
        "experiments/configs/tiny.yaml",
        [f"backbone.path={tmp_path / 'tiny'}", f"run_dir={tmp_path / 'run'}", "data.batch_size=4"],
    )
    arch, _ = architecture(tmp_path / "tiny")
    settings = memory_settings(config)
    need = plan_memory(arch, settings).training.total
    smaller = plan_memory(arch, replace(settings, batch=2)).training.total
    assert smaller < need
    free = (smaller + need) // 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free, 80 * GiB))

    def loaded(*args):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr(build, "load_flux", loaded)
    with pytest.raises(ValueError, match="predicted to need") as refused:
        run.train(config)
    message = str(refused.value)
    assert "\n" not in message and f"{free / GiB:.1f} GiB free" in message
    assert f"{need / GiB:.1f} GiB" in message and "data.batch_size=2" in message
    assert check_memory(config, free=need) is not None  # what fits passes


def test_plan_memory_prints_both_steps_broken_down(tmp_path, capsys):
    save_flux(tiny_flux(), tmp_path / "tiny")
    text = plan_cli.main(["--config", "experiments/configs/tiny.yaml", f"backbone.path={tmp_path / 'tiny'}"])
    for part in ("training step:", "sampling step:", "weights", "gradients", "optimizer", "activations"):
        assert part in text
    assert text in capsys.readouterr().out


def test_t5_on_the_cpu_stays_out_of_what_lightning_moves_and_trains_the_same(tmp_path):
    save_flux(tiny_flux(), tmp_path / "tiny")
    base = [f"backbone.path={tmp_path / 'tiny'}", "data.cache_text=false"]
    held, offloaded = (
        build_module(load_config("experiments/configs/tiny.yaml", [*base, f"backbone.t5_on_cpu={flag}"]))
        for flag in ("false", "true")
    )
    t5 = offloaded.backbone.text_encoder_2
    assert not any(m is t5 for m in offloaded.modules())
    assert any(m is held.backbone.text_encoder_2 for m in held.modules())
    settings = memory_settings(
        load_config("experiments/configs/tiny.yaml", [*base, "backbone.t5_on_cpu=true"])
    )
    assert settings.text_path == "cpu"

    l, d = held.img_ids.shape[0], held.backbone.token_dim
    batch = {
        "image_latents": torch.randn(2, l, d),
        "cond_latents": torch.randn(2, 20, l, d),
        "caption": ["She has blond wavy hair.", "He wears eyeglasses."],
    }
    held.load_state_dict(offloaded.state_dict(), strict=False)  # the same LoRA and MoGLE in both
    noise, t = torch.randn(2, l, d), torch.rand(2)
    losses = []
    for m in (held, offloaded):
        x = m.prepare(batch)
        loss, _ = flow_matching_loss(m.denoiser, x.x0, noise, t, x.text, m.img_ids, x.cond, m.config.guidance)
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)

    offloaded.to("meta")  # what Lightning's move to an accelerator does to the registered modules
    assert next(t5.parameters()).device.type == "cpu"
    assert offloaded.backbone.text_encoder.device.type == "meta"
