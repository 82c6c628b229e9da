"""A DistributedSampler that can start an epoch part-way, for resuming from a mid-epoch checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed and epoch) whose epochs hold whole optimiser steps and whose next
    epoch skips its first ``skip`` indices.

    Each process's share is cut to a multiple of ``step_images`` (its images per optimiser step), so the loader's
    micro-batches always make whole steps. The order of an epoch depends on (seed, epoch) only, so skipping the
    images of the steps already taken resumes the epoch exactly where it stopped. ``skip`` applies to one epoch
    and then resets.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, step_images: int = 1) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.step_images = step_images
        self.skip = 0

    def __len__(self) -> int:
        return self.num_samples // self.step_images * self.step_images

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip : len(self)]
        self.skip = 0
        return iter(indices)
