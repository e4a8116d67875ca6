"""Range rules: stage 2's key ranges (RULES, checked at start-up by experiments.config.checks.check_config) and
the helpers the stage-1 and evaluator dataclasses check their own fields with in `__post_init__`. An error
names the key, its value and, given, where the value came from."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce

Rule = tuple[str, Callable[[object], bool], str]

POSITIVE = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE = (lambda v: v >= 0, "must be >= 0")
AT_LEAST_ONE = (lambda v: v >= 1, "must be >= 1")
PROBABILITY = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
FINITE = (lambda v: math.isfinite(v), "must be a finite number")


def _optional(rule):
    check, says = rule
    return (lambda v: v is None or check(v), f"{says} or null")


RULES: list[Rule] = [
    ("seed", *NON_NEGATIVE),
    ("train.optim.lr", *POSITIVE),
    ("train.optim.mogle_lr", *_optional(POSITIVE)),
    ("train.optim.weight_decay", *NON_NEGATIVE),
    ("train.optim.warmup_steps", *NON_NEGATIVE),
    ("train.optim.decay_steps", *NON_NEGATIVE),
    ("train.guidance", *POSITIVE),
    ("train.gate_balance", *NON_NEGATIVE),
    ("train.sample.steps", *AT_LEAST_ONE),
    ("train.sample.guidance", *NON_NEGATIVE),
    ("train.sample.text_scale", *FINITE),
    ("train.sample.mask_scale", *FINITE),
    ("trainer.max_steps", *AT_LEAST_ONE),
    ("trainer.accumulate_grad_batches", *AT_LEAST_ONE),
    ("trainer.gradient_clip_val", *_optional(POSITIVE)),
    ("trainer.num_nodes", *AT_LEAST_ONE),
    ("trainer.log_every_n_steps", *AT_LEAST_ONE),
    ("trainer.checkpoint_every_n_steps", *AT_LEAST_ONE),
    ("trainer.val_check_interval", *_optional(AT_LEAST_ONE)),
    ("data.batch_size", *AT_LEAST_ONE),
    ("data.cache_batch_size", *AT_LEAST_ONE),
    ("data.num_workers", *NON_NEGATIVE),
    ("data.eval_subset_size", *NON_NEGATIVE),
    ("data.text_dropout", *PROBABILITY),
    ("data.region_dropout", *PROBABILITY),
    ("model.lora.rank", *AT_LEAST_ONE),
    ("model.lora.alpha", *POSITIVE),
    ("model.mogle.expert_hidden", *AT_LEAST_ONE),
    ("model.mogle.time_scale", *POSITIVE),
]


def check_rules(
    obj, rules: list[Rule], prefix: str = "", where: Callable[[str], str] = lambda key: ""
) -> None:
    """Raises ValueError for the first value of `obj` (dotted attribute paths) that breaks its rule, naming
    `prefix` + the key, the value and `where(key)`."""
    for key, check, says in rules:
        value = reduce(getattr, key.split("."), obj)
        if not check(value):
            raise ValueError(f"{prefix}{key}={value!r}{where(key)} {says}")
