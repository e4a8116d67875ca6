"""The stage-2 learning rates: warm-up, constant, linear decay to 0 at max_steps; the MoGLE group."""

import lightning as L
import pytest

from experiments.build import build_denoiser
from experiments.config import ModelConfig
from facemogle.lit_module import FaceMoGLEModule, OptimConfig, TrainConfig, lr_factor


def test_warmup_then_constant_then_linear_decay_to_zero():
    f = lr_factor(OptimConfig(warmup_steps=4, decay_steps=10), max_steps=100)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(50) == f(90) == 1.0
    assert f(95) == pytest.approx(0.5)
    assert f(99) == pytest.approx(0.1)
    assert f(100) == 0.0


def test_without_warmup_or_decay_the_factor_is_one():
    f = lr_factor(OptimConfig(), max_steps=-1)
    assert {f(s) for s in (0, 10, 10_000)} == {1.0}


def test_decay_without_max_steps_is_an_error_naming_the_keys():
    with pytest.raises(ValueError, match="decay_steps.*max_steps"):
        lr_factor(OptimConfig(decay_steps=10), max_steps=-1)


def _module(backbone, optim: OptimConfig) -> FaceMoGLEModule:
    module = FaceMoGLEModule(backbone, build_denoiser(backbone, ModelConfig()), TrainConfig(optim=optim))
    module.trainer = L.Trainer(
        max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    return module


def test_mogle_lr_puts_the_experts_and_gate_in_their_own_group(backbone):
    module = _module(backbone, OptimConfig(lr=1e-3, mogle_lr=3e-3))
    groups = module.configure_optimizers().param_groups
    mogle = {id(p) for p in module.denoiser.mogle.parameters()}
    lora = {id(p) for n, p in module.named_parameters() if "lora_" in n}
    assert [g["lr"] for g in groups] == [1e-3, 3e-3]
    assert {id(p) for p in groups[0]["params"]} == lora
    assert {id(p) for p in groups[1]["params"]} == mogle
    trainable = sum(p.numel() for p in module.trainable_parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable


def test_without_mogle_lr_one_group_holds_every_trainable_parameter(backbone):
    module = _module(backbone, OptimConfig(lr=1e-3))
    (group,) = module.configure_optimizers().param_groups
    assert group["lr"] == 1e-3 and len(group["params"]) == len(module.trainable_parameters())


def test_mogle_lr_with_prodigy_is_an_error_naming_the_key(backbone):
    module = _module(backbone, OptimConfig(name="prodigy", lr=1.0, mogle_lr=3.0))
    with pytest.raises(ValueError, match="mogle_lr"):
        module.configure_optimizers()
