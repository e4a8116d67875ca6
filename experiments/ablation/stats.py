"""Seed statistics of the ablation: the mean with a 95 % confidence interval, and the seed-paired difference
of a variant from the full model with its interval.

Intervals are Student-t intervals over seeds (scipy.stats.t): with 3 seeds the half-width is 4.30 standard
errors, so only large differences are marked. A difference is significant (marked `*`) when its interval
excludes 0. Pairing by seed removes what the seeds share (data order, noise, initialisation).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float  # nan without values
    low: float  # nan with fewer than two values
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (as a difference: the variant differs from the reference)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def format(self, fmt: str, mark: bool = False) -> str:
        """'0.575 [0.551, 0.599]', '0.575' with one value, '–' with none; mark: a trailing ' *' if significant."""
        if self.n == 0:
            return "–"
        text = fmt.format(self.mean)
        if self.n >= 2:
            text += f" [{fmt.format(self.low)}, {fmt.format(self.high)}]"
        return text + (" *" if mark and self.significant else "")


def mean_interval(values: list[float], level: float = LEVEL) -> Interval:
    """The mean of the values that are not nan, with its Student-t confidence interval."""
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = stats.t.ppf((1 + level) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(
    values: dict[int, float], reference: dict[int, float], level: float = LEVEL
) -> Interval:
    """values - reference over the seeds both have (seed -> value), as a mean with its interval."""
    seeds = sorted(s for s in values.keys() & reference.keys() if not math.isnan(values[s] - reference[s]))
    return mean_interval([values[s] - reference[s] for s in seeds], level)
