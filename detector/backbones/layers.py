"""Building blocks shared by every backbone and the SSDLite head.

All convolutions here take and return NCHW float tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

# A normalisation layer factory: channels -> module (BatchNorm2d with fixed settings, SyncBatchNorm, ...).
NormLayer = Callable[[int], nn.Module]


def batch_norm(eps: float = 1e-3, momentum: float = 0.03) -> NormLayer:
    """``nn.BatchNorm2d`` with these settings; the defaults are the TF detection setup's (docs/paper.md,
    section 2): eps 1e-3, decay 0.97 (PyTorch momentum = 1 - decay)."""
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


TF_BATCH_NORM = batch_norm()


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 % (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def activation(name: str) -> nn.Module:
    """``RE`` (ReLU), ``RE6`` (ReLU6), ``HS`` (h-swish, x * ReLU6(x + 3) / 6) or ``none``."""
    if name == "RE":
        return nn.ReLU(inplace=True)
    if name == "RE6":
        return nn.ReLU6(inplace=True)
    if name == "HS":
        return nn.Hardswish(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected RE, RE6, HS or none")


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation; ``groups == in_ch`` makes it depthwise."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str = "RE",
        norm_layer: NormLayer = TF_BATCH_NORM,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = norm_layer(out_ch)
        self.act = activation(act)
        self.out_channels = out_ch


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: pool -> 1x1 (bias) -> ReLU -> 1x1 (bias) -> gate -> scale the input.

    ``gate`` is ``"hsigmoid"`` (MobileNetV3, section 5.3) or ``"sigmoid"`` (MnasNet).
    """

    def __init__(self, channels: int, squeeze: int, gate: str = "hsigmoid") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class TfSlimHardSigmoid(nn.Module):
    """TF slim's MobileNetV3 squeeze-and-excite gate, ``relu6(x + 3) * 0.16667`` (``mobilenet_v3.py``'s
    ``gating_fn``), which the TF zoo's models were trained with. Its 0.16667 is 2e-5 larger than the 1/6 of
    ``nn.Hardsigmoid`` (it saturates at 1.00002): enough to move a converted model's logits by about 1e-2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(x + 3.0) * 0.16667


def use_tf_slim_gate(model: nn.Module) -> None:
    """Give every hard-sigmoid squeeze-and-excite gate of ``model`` TF slim's constant (in place)."""
    for module in model.modules():
        if isinstance(module, SqueezeExcite) and isinstance(module.gate, nn.Hardsigmoid):
            module.gate = TfSlimHardSigmoid()


class InvertedResidual(nn.Module):
    """Inverted residual ("bneck"): [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear project [+ input].

    ``expand`` is ``None`` when the expansion equals the input width (no 1x1 expand layer), ``se`` is an
    ``nn.Identity`` when the block has no squeeze-and-excite. The expansion output is the SSDLite C4 tap.
    """

    def __init__(
        self,
        in_ch: int,
        exp_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        act: str,
        se_channels: int = 0,
        se_gate: str = "hsigmoid",
        residual: bool = True,
        norm_layer: NormLayer = TF_BATCH_NORM,
    ) -> None:
        super().__init__()
        bn = {"norm_layer": norm_layer}
        self.expand = ConvBNAct(in_ch, exp_ch, 1, act=act, **bn) if exp_ch != in_ch else None
        self.depthwise = ConvBNAct(exp_ch, exp_ch, kernel, stride, groups=exp_ch, act=act, **bn)
        self.se = SqueezeExcite(exp_ch, se_channels, se_gate) if se_channels else nn.Identity()
        self.project = ConvBNAct(exp_ch, out_ch, 1, act="none", **bn)
        self.use_residual = residual and stride == 1 and in_ch == out_ch
        self.in_channels, self.exp_channels, self.out_channels = in_ch, exp_ch, out_ch

    def expansion(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 expand output (or the input itself when there is no expand layer)."""
        return x if self.expand is None else self.expand(x)

    def rest(self, expanded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Everything after the expansion, given the expansion output and the block input (for the residual)."""
        y = self.project(self.se(self.depthwise(expanded)))
        return x + y if self.use_residual else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.expansion(x), x)
