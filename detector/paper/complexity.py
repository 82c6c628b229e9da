"""Model size and multiply-adds, counted the way Table 6 of the paper counts them (its latency column is
measured by ``benchmarks/table6_latency.py``).

Convention (docs/paper.md, section 6): parameters are convolution weights and biases (SE and predictor
convolutions have biases), BatchNorm affine parameters are not counted; MAdds are the multiply-adds of the
convolutions at the model's input size, counted by ``torch.utils.flop_counter`` (which reports 2 FLOPs per
multiply-add) and halved.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def conv_params(model: nn.Module) -> int:
    """Weights and biases of every nn.Conv2d (and nn.Linear) in ``model``: the paper's count."""
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


def all_params(model: nn.Module) -> int:
    """Every parameter, BatchNorm included: the count torchvision publishes."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def multiply_adds(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward pass on ``inputs`` (convolutions and matrix products)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(inputs)
    model.train(was_training)
    return counter.get_total_flops() // 2
