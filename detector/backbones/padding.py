"""TF's ``SAME`` padding, for running weights trained in TF exactly.

Ours pads every convolution symmetrically by (k - 1) / 2. TF's SAME pads a total of
max((ceil(n / s) - 1) * s + k - n, 0) per spatial axis and puts the odd pixel at the bottom / right. Both give
ceil(n / s) outputs, and at stride 1 (odd kernels) they are the same padding; at stride 2 on an even input TF
pads (k - 3) / 2 before and (k - 1) / 2 after, so its samples sit one pixel further right and down than ours.
Trained from scratch either is fine; TF's weights need TF's (the stem, the stride-2 bnecks and the extra
layers 10 -> 5 and 2 -> 1 at 320x320).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("symmetric", "tf_same")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TF's SAME for an input of ``size`` along one axis."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class TFSameConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters and state-dict keys) that pads as TF's SAME before convolving.

    (N, C, H, W) -> (N, C', ceil(H / s), ceil(W / s)). Sizes are Python ints: exported graphs have fixed input
    sizes, so the padding becomes a constant ``Pad``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1], self.dilation[1])
        if top != bottom or left != right:
            x = F.pad(x, [left, right, top, bottom])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)


def use_tf_same_padding(model: nn.Module) -> int:
    """Make every strided convolution of ``model`` pad as TF's SAME (in place; weights untouched). Convolutions
    at stride 1 already do (odd kernels). Returns how many were changed."""
    changed = 0
    for m in model.modules():
        if type(m) is nn.Conv2d and max(m.stride) > 1:
            m.__class__ = TFSameConv2d
            changed += 1
    return changed
