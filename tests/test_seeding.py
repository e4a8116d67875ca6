"""Seeds from integer keys (numpy's SeedSequence) and the resumable training order built on them."""

import pytest

from data_modules.resumable import ResumableSampler
from facemogle.seeding import derive_seed


def test_derived_seeds_are_fixed_numbers_for_their_keys():
    # SeedSequence's output is part of numpy's stability promise; Python's hash of a tuple is not
    assert derive_seed(0, 3, 7) == derive_seed(0, 3, 7) == 16670220576910171284
    assert len({derive_seed(0), derive_seed(0, 3), derive_seed(0, 3, 0), derive_seed(1, 3, 0)}) == 4
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1, 2)


def test_ranks_share_one_order_and_a_resumed_epoch_skips_its_trained_batches():
    ranks = [list(ResumableSampler(10, 2, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(i for rank in ranks for i, _ in rank) == list(range(10))
    assert len({s for rank in ranks for _, s in rank}) == 10  # every position its own item seed
    resumed = list(ResumableSampler(10, 2, seed=5, rank=0, world_size=2, consumed=lambda: 1))
    assert resumed == ranks[0][2:]
    other_epoch = ResumableSampler(10, 2, seed=5, rank=0, world_size=2)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != ranks[0]
