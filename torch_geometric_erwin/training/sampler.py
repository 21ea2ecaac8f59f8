"""A resumable, shardable sampler of global training batches."""
from __future__ import annotations

from typing import Iterator, List

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[List[int]]):
    r"""Yields this process's share of each global training batch, forever, from any step.

    Epoch :math:`e` uses the permutation drawn from a generator seeded with
    ``(seed, e)``; global batch :math:`b` of the epoch is
    ``perm[b * G:(b + 1) * G]`` with :math:`G` = ``global_batch_size`` (the tail
    shorter than :math:`G` is dropped) and process ``rank`` of ``world_size`` takes its
    contiguous slice of ``G / world_size`` indices. Global step :math:`s` maps to
    epoch ``s // batches_per_epoch``, so the data order depends only on the seed and
    the step, not on the number of processes: a run resumed at step ``start_step``
    on any world size sees the same global batches as an uninterrupted one.

    Args:
        num_samples: dataset length.
        global_batch_size: samples per optimiser step over all processes.
        seed: seed of the per-epoch permutations.
        start_step: first global step to yield.
        rank, world_size: this process and the number of processes.
        shuffle: permute each epoch (otherwise dataset order).
    """

    def __init__(self, num_samples: int, global_batch_size: int, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if global_batch_size < 1 or global_batch_size > num_samples:
            raise ValueError(f"batch size must lie in [1, {num_samples}] (the training set size), "
                             f"got {global_batch_size}")
        if global_batch_size % world_size:
            raise ValueError(f"batch size {global_batch_size} must be divisible by the number of "
                             f"processes ({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        self.num_samples, self.global_batch_size = num_samples, global_batch_size
        self.seed, self.start_step, self.shuffle = seed, start_step, shuffle
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = global_batch_size // world_size
        self.batches_per_epoch = num_samples // global_batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """``[num_samples]`` the sample order of ``epoch``."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[List[int]]:
        step = self.start_step
        lo = self.rank * self.local_batch_size
        while True:
            epoch, batch = divmod(step, self.batches_per_epoch)
            order = self.epoch_order(epoch)
            for b in range(batch, self.batches_per_epoch):
                start = b * self.global_batch_size + lo
                yield order[start:start + self.local_batch_size].tolist()
                step += 1
