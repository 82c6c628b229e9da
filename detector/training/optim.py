"""SGD with weight decay on convolution weights only, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """Two groups: conv weights (4-D) with ``weight_decay`` (TF's L2 on conv weights), everything else
    (BatchNorm, biases) without."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim == 4 else no_decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=momentum,
    )


def warmup_cosine(total_iters: int, warmup_iters: int, warmup_factor: float, min_ratio: float = 0.0):
    """Multiplier of the base lr at iteration i: linear from ``warmup_factor`` to 1 over ``warmup_iters``,
    then cosine from 1 to ``min_ratio`` at ``total_iters`` (docs/paper.md, section 4)."""

    def factor(i: int) -> float:
        if i < warmup_iters:
            return warmup_factor + (1.0 - warmup_factor) * i / warmup_iters
        progress = min(1.0, (i - warmup_iters) / max(1, total_iters - warmup_iters))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
