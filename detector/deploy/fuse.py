"""Inference-only rewrites of a trained model: BatchNorm folded into the preceding convolution.

In eval mode BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so a
convolution followed by it equals one convolution with scaled weights and a bias
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). The fused model computes the same function (to float rounding,
about 1e-6 relative) with one kernel instead of two per layer; it cannot be trained any more.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_for_inference(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A fused copy of ``model`` in eval mode; ``model`` itself is left as it is.

    Every ``nn.Sequential`` child pair (Conv2d, BatchNorm2d) - which covers every ``ConvBNAct`` of the
    backbones and the SSDLite head - becomes the fused Conv2d followed by ``nn.Identity``. Only sequential
    containers are rewritten, because only there does child order equal data flow.

    ``channels_last`` also stores the weights NHWC, which lets oneDNN run the convolutions on the CPU without
    layout conversions (NCHW inputs still work; the output tensors keep their (N, A, ...) shapes).
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused


def count_batchnorms(model: nn.Module) -> int:
    """BatchNorm2d layers left in ``model`` (0 after ``fuse_for_inference`` of our models)."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
