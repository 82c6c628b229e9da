"""SGD with weight decay on convolution weights only, the warmup + cosine learning-rate schedule, and the objects
an optimiser step updates, together (``Optimisation``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


@dataclass
class Optimisation:
    """What a step updates besides the model: the optimiser, its learning-rate schedule (stepped per
    iteration), the AMP gradient scaler (a no-op when disabled) and the EMA of the weights (None without)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None = None

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group (the base one) now."""
        return self.optimizer.param_groups[0]["lr"]


def build_optimizer(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, backbone_lr_mult: float = 1.0
) -> torch.optim.SGD:
    """SGD with conv weights (4-D) under ``weight_decay`` (TF's L2 on conv weights) and everything else
    (BatchNorm, biases) without. With ``backbone_lr_mult`` != 1 the parameters of ``model.backbone`` form two
    more groups that learn at ``lr * backbone_lr_mult``. Group 0 always holds conv weights at the base lr."""
    split = backbone_lr_mult != 1.0 and hasattr(model, "backbone")
    in_backbone = {id(p) for p in model.backbone.parameters()} if split else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(b, d): [] for b in (False, True) for d in (True, False)}
    for p in model.parameters():
        if p.requires_grad:
            groups[(id(p) in in_backbone, p.ndim == 4)].append(p)
    param_groups = [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * (backbone_lr_mult if bb else 1.0)}
        for (bb, decay), params in groups.items()
        if params or not bb
    ]
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum)


def warmup_cosine(total_iters: int, warmup_iters: int, warmup_factor: float, min_ratio: float = 0.0):
    """Multiplier of the base lr at iteration i: linear from ``warmup_factor`` to 1 over ``warmup_iters``,
    then cosine from 1 to ``min_ratio`` at ``total_iters`` (docs/paper.md, section 4)."""

    def factor(i: int) -> float:
        if i < warmup_iters:
            return warmup_factor + (1.0 - warmup_factor) * i / warmup_iters
        progress = min(1.0, (i - warmup_iters) / max(1, total_iters - warmup_iters))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
