"""Train / validation / test splits.

celebahq  the paper's protocol on CelebA-HQ ids: ids 0..26999 train, 27000..29999 test. Keys must be
          integers. The validation set is a fixed (seeded) random subset of `val_size` training ids.
fraction  any keys, in sorted order: the last `test_fraction` are the test set, a fixed (seeded)
          `val_fraction` of the rest the validation set; each non-empty split gets at least one item.
          Meant for sets of other sizes (the synthetic set, zero-shot sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from data_modules.layouts import FaceRecord, sort_keys
from facemogle.rules import FRACTION, NON_NEGATIVE, Range, check_ranges

CELEBAHQ_TRAIN_IDS = 27_000  # ids below are the training set
CELEBAHQ_NUM_IDS = 30_000
PROTOCOLS = ("celebahq", "fraction")


@dataclass(frozen=True)
class Split:
    train: list[str]
    val: list[str]
    test: list[str]


SPLITS: tuple[str, ...] = tuple(f.name for f in fields(Split))  # train, val, test


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = "celebahq"
    val_size: int = 500  # celebahq: validation ids carved from the training ids
    val_fraction: float = 0.05  # fraction: of the non-test keys
    test_fraction: float = 0.1  # fraction: of all keys
    seed: int = 0

    RULES: ClassVar[dict[str, Range]] = {
        "val_size": NON_NEGATIVE,
        "val_fraction": FRACTION,
        "test_fraction": FRACTION,
        "seed": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"split protocol {self.protocol!r} is not one of {PROTOCOLS}")
        check_ranges(self)


def _carve(keys: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """-> (rest, chosen): n keys chosen by a seeded permutation, both in the input order."""
    chosen = set(np.random.default_rng(seed).permutation(len(keys))[:n].tolist())
    return [k for i, k in enumerate(keys) if i not in chosen], [k for i, k in enumerate(keys) if i in chosen]


def split_keys(keys, config: SplitConfig) -> Split:
    keys = sort_keys(keys)
    if config.protocol == "celebahq":
        bad = [k for k in keys if not k.isdigit() or int(k) >= CELEBAHQ_NUM_IDS]
        if bad:
            raise ValueError(
                f"split protocol 'celebahq' needs CelebA-HQ ids 0..{CELEBAHQ_NUM_IDS - 1}, got key {bad[0]!r}; "
                "use protocol 'fraction' for other data sets"
            )
        train = [k for k in keys if int(k) < CELEBAHQ_TRAIN_IDS]
        test = [k for k in keys if int(k) >= CELEBAHQ_TRAIN_IDS]
        if config.val_size >= len(train) > 0:
            raise ValueError(f"val_size {config.val_size} leaves no training ids out of {len(train)}")
        train, val = _carve(train, config.val_size, config.seed)
        return Split(train, val, test)
    n_test = _at_least_one(len(keys), config.test_fraction)
    rest, test = keys[: len(keys) - n_test], keys[len(keys) - n_test :]
    train, val = _carve(rest, _at_least_one(len(rest), config.val_fraction), config.seed)
    return Split(train, val, test)


def _at_least_one(n: int, fraction: float) -> int:
    if fraction == 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def split_records(
    records: Sequence[FaceRecord], config: SplitConfig, split: str, n: int | None = None
) -> list[FaceRecord]:
    """The first n records (key order; all when n is None) of one split of `records`."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    by_key = {r.key: r for r in records}
    keys = getattr(split_keys(by_key, config), split)[:n]
    if not keys:
        raise ValueError(f"data.split: the {split} split of these {len(records)} faces is empty")
    return [by_key[k] for k in keys]
