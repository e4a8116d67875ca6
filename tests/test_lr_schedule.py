"""The stage-2 learning-rate schedule: warm-up, constant, linear decay to 0 at max_steps."""

import pytest

from facemogle.lit_module import OptimConfig, lr_factor


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
