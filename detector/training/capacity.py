"""What one training process can take: the micro-batch that fits its GPU, the loader workers its cores allow,
and how fast one loader worker prepares images.

``train.micro_batch: auto`` tries a forward and backward pass of the recipe's model at its input size on random
images, halving on out-of-memory, and keeps the largest micro-batch (a divisor of the process's share of the
batch) whose peak stays within ``HEADROOM`` of the card. ``data.workers: auto`` shares the cores the process may
use between the training processes of the machine.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from detector.data.image_io import to_model_input
from detector.errors import UserError
from detector.ssd.losses import FocalLoss, HardNegativeSoftmaxLoss
from detector.training.engine import batchnorm_to_eval

log = logging.getLogger(__name__)

HEADROOM = 0.85  # of the card's memory the probe's peak may reach: the rest for fragmentation over a long run
MAX_WORKERS = 8  # loader workers per process past which a GPU run rarely gains (and memory grows)


class MicroBatchTooLarge(UserError):
    """Not even the smallest micro-batch fits the device's memory."""


@dataclass(frozen=True)
class MicroBatchChoice:
    """The micro-batch ``choose_micro_batch`` settled on and what it measured (bytes)."""

    micro_batch: int
    peak: int  # the probe's peak at that micro-batch
    per_image: float  # (peak - memory before the probe) / micro_batch
    capacity: int  # the device's memory
    tried: tuple[int, ...]  # every micro-batch tried, in order

    def line(self, per_process: int, image_size: tuple[int, int]) -> str:
        gib = 2**30
        return (
            f"train.micro_batch auto: {self.micro_batch} images per forward pass, {per_process // self.micro_batch} "
            f"per optimiser step of {per_process} (tried {', '.join(map(str, self.tried))}); "
            f"{self.per_image / 2**20:.0f} MB per image at {image_size[0]}x{image_size[1]}, "
            f"peak {self.peak / gib:.1f} of {self.capacity / gib:.1f} GiB"
        )


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (1 when ``at_most`` < 1)."""
    return next((d for d in range(min(n, at_most), 0, -1) if n % d == 0), 1)


# How CUDA libraries word a failed allocation when it does not reach PyTorch's allocator as OutOfMemoryError.
_ALLOCATION_FAILED = ("CUDA out of memory", "CUDA error: out of memory", "CUDNN_STATUS_ALLOC_FAILED",
                      "CUBLAS_STATUS_ALLOC_FAILED")  # fmt: skip


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory: ``torch.cuda.OutOfMemoryError``, or the RuntimeError
    that cuDNN, cuBLAS or a kernel launch raise for a failed allocation."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _ALLOCATION_FAILED)


def least_micro_batch(freeze_bn: bool) -> int:
    """The fewest images one forward pass may hold: 2 with BatchNorm in training mode (the last feature maps are
    1x1, and BatchNorm needs two values a channel), 1 with it frozen."""
    return 1 if freeze_bn else 2


def smaller_micro_batch(per_step: int, micro: int, freeze_bn: bool) -> tuple[int, bool] | None:
    """What to try after ``micro`` ran out of memory: (a divisor of ``per_step`` at most half of it, or failing
    that the largest below it, whether BatchNorm must then be frozen (a micro-batch of 1)); None when ``micro``
    is 1 already. BatchNorm stays in training mode whenever a micro-batch of 2 or more divides the step."""
    least = least_micro_batch(freeze_bn)
    for candidate in (largest_divisor(per_step, micro // 2), largest_divisor(per_step, micro - 1)):
        if least <= candidate < micro:
            return candidate, False
    return (1, True) if micro > 1 else None


def choose_micro_batch(
    per_process: int,
    trial: Callable[[int], int],
    capacity: int,
    before: int = 0,
    smallest: int = 2,
    headroom: float = HEADROOM,
) -> MicroBatchChoice:
    """The largest divisor ``m`` of ``per_process`` whose ``trial(m)`` (the peak bytes of one forward and backward
    pass of ``m`` images; it raises an out-of-memory error, ``is_out_of_memory``, when they do not fit) stays within
    ``headroom`` of ``capacity``. Starts at ``per_process`` and halves on out-of-memory; from a pass that fitted but
    went past the headroom it goes straight to the size its memory per image allows. Once a size fits, it tries the
    largest divisor between it and the smallest size that did not fit that the fitting pass's memory per image
    allows (halving from 96 to 48 to 24 skips 32), until no larger divisor is left to try. ``before``: bytes in use
    before a trial (weights, optimiser state), not counted per image. ``smallest``: the least micro-batch allowed
    (BatchNorm needs 2)."""
    m, tried = per_process, []
    best: MicroBatchChoice | None = None
    too_big = per_process + 1  # the smallest size known not to fit
    while True:
        tried.append(m)
        try:
            peak = trial(m)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            if not is_out_of_memory(exc):
                raise
            peak = None
        if peak is None:
            too_big = m
            nxt = largest_divisor(per_process, m // 2)
        else:
            per_image = max(1.0, (peak - before) / m)
            fits = math.floor((headroom * capacity - before) / per_image)
            if peak <= headroom * capacity:
                best = MicroBatchChoice(m, peak, per_image, capacity, tried=())
            else:
                too_big = m
            nxt = largest_divisor(per_process, min(fits, too_big - 1))
        if best is not None and nxt <= best.micro_batch:
            return replace(best, tried=tuple(tried))
        if best is None and (m <= smallest or nxt < smallest):
            raise MicroBatchTooLarge(
                f"train.micro_batch auto: not even {m} images per forward pass fit in "
                f"{capacity / 2**30:.1f} GiB (tried {', '.join(map(str, tried))}); use a smaller model.image_size "
                "or a device with more memory"
            )
        m = nxt


def choose_on_cuda(
    per_process: int, trial: Callable[[int], int], device: torch.device, freeze_bn: bool
) -> MicroBatchChoice:
    """``choose_micro_batch`` on a CUDA device: its memory, what is allocated now, and the least micro-batch
    BatchNorm allows (1 when frozen)."""
    total = torch.cuda.get_device_properties(device).total_memory
    return choose_micro_batch(
        per_process, trial, total, torch.cuda.memory_allocated(device), least_micro_batch(freeze_bn)
    )


def memory_trial(
    model: nn.Module,
    criterion: FocalLoss | HardNegativeSoftmaxLoss,
    image_size: tuple[int, int],
    amp: bool,
    channels_last: bool,
    freeze_bn: bool = False,
) -> Callable[[int], int]:
    """``trial(m)`` for ``choose_micro_batch``: one forward, loss and backward pass of ``m`` random images at
    ``image_size`` (H, W) with two boxes each on the model's device, as training runs them (AMP, channels-last),
    returning the peak bytes: on CUDA the peak allocated in the pass plus the momentum buffers the optimiser will
    add; on the CPU the process's peak resident set, which only grows (compare passes in increasing size). The
    weights, their gradients and BatchNorm's running statistics are left as they were. Local to this process: no
    collective calls (the loss is normalised by this batch's matched anchors; SyncBatchNorm comes later), so
    processes may probe independently and then agree (``setup.micro_batch_size``)."""
    device = next(model.parameters()).device
    height, width = image_size
    boxes = torch.tensor([[0.1 * width, 0.1 * height, 0.6 * width, 0.7 * height],
                          [0.4 * width, 0.3 * height, 0.9 * width, 0.9 * height]], device=device)  # fmt: skip
    momentum = sum(p.numel() * p.element_size() for p in model.parameters())
    keys = ("running_mean", "running_var", "num_batches_tracked")
    statistics = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(keys)}
    cuda = device.type == "cuda"

    def trial(m: int) -> int:
        model.train()
        if freeze_bn:  # as training runs it (and a pass of 1 image in training mode would fail)
            batchnorm_to_eval(model)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            x = to_model_input(torch.randint(0, 256, (m, height, width, 3), dtype=torch.uint8), device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            targets = [{"boxes": boxes, "labels": torch.tensor([1, 1], device=device)} for _ in range(m)]
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp and cuda):
                box, logits = model(x)
            labels, codes = criterion.match(targets, model.anchors)
            normalizer = max(1.0, (labels > 0).sum().item())
            criterion.compute(box.float(), logits.float(), labels, codes, normalizer)["total"].backward()
            del x, box, logits
            if cuda:
                torch.cuda.synchronize(device)
                return torch.cuda.max_memory_allocated(device) + momentum
            return peak_resident_bytes()
        finally:
            model.zero_grad(set_to_none=True)
            model.load_state_dict(statistics, strict=False)
            if cuda:
                torch.cuda.empty_cache()

    return trial


def peak_resident_bytes() -> int:
    """The process's peak resident set so far (Unix; 0 where the platform does not say)."""
    try:
        import resource
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def auto_workers(device_type: str, local_processes: int = 1, cores: int | None = None) -> int:
    """``data.workers: auto``: this process's share of the cores (the training processes of one machine share
    them), one left for the training loop, at most ``MAX_WORKERS``. On the CPU the model's own threads need the
    cores: no workers up to 4 cores a process, then a quarter of them."""
    share = (cores or available_cores()) // max(1, local_processes)
    if device_type == "cuda":
        return max(1, min(MAX_WORKERS, share - 1))
    return 0 if share <= 4 else min(MAX_WORKERS, share // 4)


def worker_images_per_s(dataset: Dataset, images: int = 24) -> float:
    """Images per second one loader worker prepares (read, decode, augment, resize): ``dataset[i]`` timed in this
    process over ``images`` indices spread over the dataset."""
    count = min(images, len(dataset))
    indices = [round(i * (len(dataset) - 1) / max(1, count - 1)) for i in range(count)]
    dataset[indices[0]]  # the first call pays for imports and caches, as a worker's first image does
    start = time.perf_counter()
    for i in indices:
        dataset[i]
    return count / (time.perf_counter() - start)


def loader_line(dataset: Dataset, workers: int) -> str:
    """What the training log says at the start of a GPU run about the loader's speed."""
    rate = worker_images_per_s(dataset)
    return (
        f"data: one loader worker prepares {rate:.0f} images/s, so {workers} workers about "
        f"{rate * max(1, workers):.0f} images/s; a training rate (img_s) near that means the loader is the limit: "
        "raise data.workers"
    )
