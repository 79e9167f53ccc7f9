"""Which images each rank reads: ``rank_indices`` and a ``Sampler`` made from it.

``rank_indices(n, rank, world, seed, epoch)`` is the course's copy of the data-parallel lesson's
exercise: the indices ``torch.utils.data.DistributedSampler`` (``shuffle=True``,
``drop_last=False``) gives rank ``rank`` of ``world`` in ``epoch``. :class:`RankSampler` turns
any such function into a sampler for a ``DataLoader``, so that ``distributed.run`` can draw each
rank's shard with the learner's own function (saved in ``mine``: a spawned process can import a
file, not a function defined in a notebook).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["RankSampler", "rank_indices"]


def rank_indices(n: int, rank: int, world: int, seed: int = 0, epoch: int = 0) -> list[int]:
    """The indices (ints) rank ``rank`` of ``world`` reads in ``epoch`` of a dataset of ``n``
    items: one shuffle seeded with ``seed + epoch`` (the same on every rank), padded by repeating
    its start up to a multiple of ``world``, then dealt out, ``indices[rank::world]``."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = -(-n // world) * world
    while len(order) < total:
        order += order[:total - len(order)]
    return order[rank::world]


class RankSampler(Sampler[int]):
    """A ``DataLoader`` sampler that yields ``indices(n, rank, world, seed, epoch)``; call
    :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.

    n: the dataset's length; indices: a function with :func:`rank_indices`'s signature (the
    learner's, from ``mine``, or this module's)."""

    def __init__(self, n: int, rank: int, world: int, seed: int = 0,
                 indices: Callable[..., list[int]] = rank_indices) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.n, self.rank, self.world, self.seed, self.indices = n, rank, world, seed, indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter([int(i) for i in self.indices(self.n, self.rank, self.world, self.seed,
                                                  self.epoch)])

    def __len__(self) -> int:
        return (self.n + self.world - 1) // self.world
