"""The ranges of config fields, each checked once, where its dataclass is defined.

A config dataclass lists its own fields' ranges in a `RULES` class variable and calls `check_ranges(self)`
in `__post_init__`, so a value is refused whoever builds the dataclass. The error (`RuleError`) names the
field relative to its dataclass; experiments.config.load names the full dotted key and where the value came
from (the command line, a YAML file, the default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    check: Callable[[Any], bool]
    says: str  # completes "KEY=VALUE ...": "must be > 0"
    bad: Any  # a value the range refuses: tests/test_config_rules.py breaks every rule with it

    def __call__(self, value: Any) -> bool:
        return bool(self.check(value))


POSITIVE = Range(lambda v: v > 0, "must be > 0", 0)
NON_NEGATIVE = Range(lambda v: v >= 0, "must be >= 0", -1)
AT_LEAST_ONE = Range(lambda v: v >= 1, "must be >= 1", 0)
PROBABILITY = Range(lambda v: 0 <= v <= 1, "must be in [0, 1]", 1.5)
FRACTION = Range(lambda v: 0 <= v < 1, "must be in [0, 1)", 1.0)
FINITE = Range(lambda v: math.isfinite(v), "must be a finite number", float("inf"))


def optional(rule: Range) -> Range:
    """`rule`, or None."""
    return Range(lambda v: v is None or rule(v), f"{rule.says} or null", rule.bad)


class RuleError(ValueError):
    """The field `key` of a dataclass of type `owner` is outside its range `rule`."""

    def __init__(self, owner: type, key: str, value: Any, rule: Range):
        self.owner, self.key, self.value, self.rule = owner, key, value, rule
        super().__init__(self.message(key))

    def message(self, full_key: str, where: str = "") -> str:
        """'FULL_KEY=VALUE WHERE must be ...': `where` is, say, ' (from the command line)'."""
        return f"{full_key}={self.value!r}{where} {self.rule.says}"


def check_ranges(obj: Any) -> None:
    """Raises RuleError for the first field of the dataclass `obj` outside its range in `type(obj).RULES`."""
    for key, rule in type(obj).RULES.items():
        value = getattr(obj, key)
        if not rule(value):
            raise RuleError(type(obj), key, value, rule)
