"""Data order that resumes exactly: a seeded, shardable, restartable sampler and per-item augmentation seeds.

Each epoch's order depends only on ``(seed, epoch)`` (as
:class:`~torch.utils.data.distributed.DistributedSampler` does), so a run resumed
in the middle of an epoch sees the same remaining samples in the same order; and
every item's augmentation is seeded from ``(seed, epoch, position)``, so it does
not depend on what was drawn before, nor on the number of data-loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumableSampler", "SeededItems", "item_seed"]


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed for the item at ``position`` of epoch ``epoch``'s order."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(position)]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """This rank's share of each epoch's order, optionally starting part-way through.

    Yields ``(item_seed, index)`` pairs for :class:`SeededItems`. With ``shuffle``
    the epoch's order is ``torch.randperm(num_samples)`` from a generator seeded
    with ``seed + epoch``; it is padded by repeating its start to a multiple of
    ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``
    (DistributedSampler's split), so every rank has ``ceil(num_samples / world_size)``
    items.

    Args:
        num_samples: dataset length (>= 1).
        shuffle: a new order each epoch [True].
        seed: base seed [0].
        rank, world_size: this process's shard [0, 1].

    ``set_epoch(e)`` selects the epoch; ``set_start(k)`` skips this rank's first ``k``
    items of it (resuming); ``len()`` counts the items still to come.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError(f"the dataset is empty (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.num_samples = int(num_samples)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.per_rank = -(-self.num_samples // world_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start must be in [0, {self.per_rank}], got {start}")
        self.start = int(start)

    def order(self) -> list[int]:
        """The whole epoch's padded order (every rank's items)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            indices = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        while len(indices) < total:
            indices += indices[: total - len(indices)]
        return indices

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.order()
        for k in range(self.start, self.per_rank):
            position = self.rank + k * self.world_size
            yield item_seed(self.seed, self.epoch, position), indices[position]

    def __len__(self) -> int:
        return self.per_rank - self.start


class SeededItems(Dataset):
    """``dataset[index]`` with its augmentation seeded: ``self[(seed, index)]``.

    ``dataset`` is a :class:`~lossreg.data.DetectionDataset` (its albumentations
    ``Compose``, if any, is re-seeded before each item); a plain index is passed through.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, tuple):
            seed, index = key
            augment = getattr(getattr(self.dataset, "transforms", None), "augment", None)
            if augment is not None:
                augment.set_random_seed(int(seed))
            return self.dataset[index]
        return self.dataset[key]
