"""MobileNetV1 (Howard et al., 2017, Table 1) with the SSD taps of TF's feature extractor.

C4 is the output of the 11th depthwise-separable layer (512 channels, stride 16), C5 the 13th (1024, stride 32).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from detector.backbones.layers import TF_BATCH_NORM, ConvBNAct, NormLayer, make_divisible


class Layer(NamedTuple):
    out: int
    stride: int
    c4: bool = False  # its output is the SSD C4 tap (stride 16)


# The 13 depthwise-separable layers after the 32-filter 3x3 stem; the last one's output is C5.
LAYERS = (
    Layer(64, 1),
    Layer(128, 2),
    Layer(128, 1),
    Layer(256, 2),
    Layer(256, 1),
    Layer(512, 2),
    Layer(512, 1),
    Layer(512, 1),
    Layer(512, 1),
    Layer(512, 1),
    Layer(512, 1, c4=True),  # layer 11
    Layer(1024, 2),
    Layer(1024, 1),  # layer 13
)
STEM = 32


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch, act="RE6", norm_layer=norm_layer)
        self.pointwise = ConvBNAct(in_ch, out_ch, 1, act="RE6", norm_layer=norm_layer)
        self.out_channels = out_ch


class MobileNetV1(nn.Module):
    """Detection backbone: ``forward_taps`` (N, 3, H, W) -> (C4 (N, 512w, H/16, W/16), C5 (N, 1024w, H/32, W/32))."""

    def __init__(self, width: float = 1.0, norm_layer: NormLayer = TF_BATCH_NORM) -> None:
        super().__init__()

        def scale(c: float) -> int:
            return make_divisible(c * width)

        self.stem = ConvBNAct(3, scale(STEM), 3, 2, act="RE6", norm_layer=norm_layer)
        layers, in_ch = [], scale(STEM)
        for row in LAYERS:
            layers.append(DepthwiseSeparable(in_ch, scale(row.out), row.stride, norm_layer))
            in_ch = scale(row.out)
        self.layers = nn.ModuleList(layers)
        self.c4_layer = next(i for i, row in enumerate(LAYERS) if row.c4)
        self.c4_channels = self.layers[self.c4_layer].out_channels
        self.c5_channels = in_ch

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        c4 = x
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.c4_layer:
                c4 = x
        return c4, x
