"""A DistributedSampler that can start an epoch part-way, for resuming from a mid-epoch checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed and epoch) whose next epoch skips its first ``skip`` indices.

    The order of an epoch depends on (seed, epoch) only, so skipping the batches already trained on resumes
    the epoch exactly where it stopped. ``skip`` applies to one epoch and then resets.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)
