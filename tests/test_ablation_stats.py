"""The ablation's statistics: Student-t intervals over seeds and seed-paired differences."""

from __future__ import annotations

import math

import pytest

from experiments.ablation.stats import mean_interval, paired_difference


def test_the_interval_is_the_student_t_one_over_the_seeds():
    interval = mean_interval([1.0, 2.0, 3.0])
    # t(0.975, 2 dof) = 4.3027, standard error 1 / sqrt(3)
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.high - interval.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval.format("{:.2f}") == "2.00 [-0.48, 4.48]"


def test_nan_values_are_left_out_and_one_value_has_no_interval():
    one = mean_interval([float("nan"), 0.5])
    assert (one.mean, one.n) == (0.5, 1) and math.isnan(one.low) and math.isnan(one.high)
    assert mean_interval([0.5]).format("{:.1f}") == "0.5"
    assert mean_interval([]).format("{:.1f}") == "–"
    assert not mean_interval([0.5]).significant


def test_a_paired_difference_pairs_by_seed_and_marks_an_interval_that_excludes_zero():
    full = {0: 0.50, 1: 0.60, 2: 0.70}
    worse = {0: 0.40, 1: 0.51, 2: 0.59, 3: 0.0}  # seed 3 has no partner
    difference = paired_difference(worse, full)
    assert difference.n == 3 and difference.mean == pytest.approx(-0.10)
    assert difference.significant and difference.format("{:.2f}", mark=True).endswith(" *")
    # unpaired, the seed spread (0.1) would hide the same shift
    assert not mean_interval(
        [a - b for a, b in zip([0.4, 0.51, 0.59], [0.7, 0.5, 0.6], strict=True)]
    ).significant
    noisy = paired_difference({0: 0.6, 1: 0.4, 2: 0.75}, full)
    assert not noisy.significant and not noisy.format("{:.2f}", mark=True).endswith("*")
