"""The stage-2 learning rates: warm-up, constant, linear decay to 0 at max_steps; the MoGLE group."""

import lightning as L
import pytest
import torch

from experiments.config.schema import ModelConfig
from experiments.training.build import build_denoiser
from facemogle.lit_module import FaceMoGLEModule, OptimConfig, TrainConfig, lr_schedule


def lrs(cfg: OptimConfig, max_steps: int, steps: int) -> list[float]:
    """The lr each of the first `steps` optimizer steps runs at, base lr 1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(optimizer, cfg, max_steps)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return seen


def test_warmup_then_constant_then_linear_decay_to_zero():
    lr = lrs(OptimConfig(warmup_steps=4, decay_steps=10), max_steps=100, steps=101)
    # transformers' warm-up starts at 0: step s runs at s / warmup_steps, full from step 4 on
    assert lr[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert set(lr[4:91]) == {1.0}
    assert lr[95] == pytest.approx(0.5) and lr[99] == pytest.approx(0.1) and lr[100] == 0.0


def test_warmup_without_max_steps_stays_constant_after_it():
    lr = lrs(OptimConfig(warmup_steps=2), max_steps=-1, steps=10_000)
    assert lr[:3] == [0.0, 0.5, 1.0] and set(lr[2:]) == {1.0}


def test_without_warmup_or_decay_there_is_no_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert lr_schedule(optimizer, OptimConfig(), max_steps=-1) is None


def test_bad_schedules_are_errors_naming_the_keys():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_steps.*max_steps"):
        lr_schedule(optimizer, OptimConfig(decay_steps=10), max_steps=-1)
    with pytest.raises(ValueError, match="warmup_steps 6 \\+ decay_steps 5 exceed trainer.max_steps 10"):
        lr_schedule(optimizer, OptimConfig(warmup_steps=6, decay_steps=5), max_steps=10)


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


def test_a_schedule_steps_with_every_optimizer_step(backbone):
    module = _module(backbone, OptimConfig(lr=1e-3, warmup_steps=2, decay_steps=4))
    configured = module.configure_optimizers()
    assert configured["lr_scheduler"]["interval"] == "step"
    assert configured["optimizer"].param_groups[0]["lr"] == 0.0  # warm-up step 0


def test_gate_entropy_is_uniform_for_even_weights_and_zero_for_one_hot():
    import math

    from facemogle.lit_module import gate_entropy

    even = torch.full((2, 5, 20), 1 / 20)
    one_hot = torch.nn.functional.one_hot(torch.arange(5) % 20, 20).float()[None]
    assert gate_entropy(even).item() == pytest.approx(math.log(20))
    assert gate_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
