"""Seeds derived from integer keys, the same in every process, platform and Python version.

numpy's SeedSequence hashes the keys; Python's `hash` of a tuple is not promised to stay the same
across Python versions, and checkpoints outlive an interpreter upgrade.
"""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *keys: int) -> int:
    """A 64-bit torch seed for (seed, keys): keys of another length or value give an unrelated seed."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed {seed} and keys {keys}: SeedSequence takes non-negative integers")
    return int(np.random.SeedSequence(seed, spawn_key=keys).generate_state(1, dtype=np.uint64)[0])
