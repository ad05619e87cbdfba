"""Sharding a dataset epoch over the processes of a multi-GPU job (see :mod:`arkx.training.distributed`).

Every rank draws the same seeded permutation, cuts it into the same global batches of ``data.batch_size`` and
keeps its contiguous slice of each: the job sees the batches one process would see, whatever its size.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

from ..errors import ArkxValueError


def slice_bounds(total: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous slice of ``total`` items (sizes differ by at most one,
    the first ranks take the larger ones, as ``numpy.array_split``)."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def slice_weight(local: int, total: int, world_size: int) -> float:
    """The factor that makes the mean over ranks of ``factor x (mean loss of a slice)`` the mean loss of the
    global batch: ``local x world_size / total`` (1 when the slices are equal)."""
    return local * world_size / total


class ShardedBatches(Sampler[list[int]]):
    """The batches of rank ``rank``: the ``sampler``'s order (the seeded permutation every rank draws alike)
    cut into global batches of ``batch_size``, of which this rank takes its contiguous slice.

    ``drop_last`` drops a last partial global batch (as the single-process loader does); :meth:`global_size`
    says how many images the global batch of an iteration holds (the augmentation is drawn for all of them)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, rank: int, world_size: int):
        if batch_size < world_size:
            raise ArkxValueError(f"data.batch_size {batch_size} is smaller than the number of processes "
                                 f"{world_size}: every rank needs at least one image of each global batch")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def global_size(self, iteration: int) -> int:
        """The number of images in global batch ``iteration`` of the current pass."""
        n = len(self.sampler)
        return min(self.batch_size, n - iteration * self.batch_size)

    def __iter__(self):
        order = list(self.sampler)
        for i in range(len(self)):
            chunk = order[i * self.batch_size:(i + 1) * self.batch_size]
            if len(chunk) < self.world_size:
                raise ArkxValueError(f"a global batch of {len(chunk)} image(s) cannot be shared by {self.world_size} "
                                     "processes: the dataset's train split is smaller than the number of processes")
            start, stop = slice_bounds(len(chunk), self.world_size, self.rank)
            yield chunk[start:stop]


def shard_indices(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous part of an evaluation split (gathered back in rank order: the original order)."""
    start, stop = slice_bounds(len(indices), world_size, rank)
    return indices[start:stop]
