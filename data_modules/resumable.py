"""Deterministic, resumable training order.

The sampler yields (index, item_seed) pairs: the order is a permutation drawn from (seed, epoch), each
rank takes every world_size-th position, and each item's randomness (caption choice, dropout) is seeded
from (seed, epoch, position). `SeededItems` applies that seed around the wrapped dataset's
`__getitem__`. At the start of an epoch the sampler asks `consumed()` how many of its batches this
rank has already trained on (non-zero only when Lightning resumes mid-epoch) and skips them, so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from facemogle.seeding import derive_seed


class ResumableSampler(Sampler[tuple[int, int]]):
    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        consumed: Callable[[], int] = lambda: 0,
    ):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.consumed = rank, world_size, consumed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _positions(self) -> list[int]:
        # Every rank gets the same number of items (DistributedSampler's padding rule).
        per_rank = -(-self.n // self.world_size)
        return list(range(self.rank, per_rank * self.world_size, self.world_size))

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(
            self.n, generator=torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        )
        skip = self.consumed() * self.batch_size
        for position in self._positions()[skip:]:
            yield int(order[position % self.n]), derive_seed(self.seed, self.epoch, position)


class SeededItems(Dataset):
    """Runs the wrapped dataset's __getitem__ under the item seed the sampler chose."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        # Items draw on the CPU generator alone: seeding it directly skips torch.manual_seed's lazy
        # accelerator seeding, which records a stack trace per call (docs/tuning-log.md).
        index, seed = item
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
