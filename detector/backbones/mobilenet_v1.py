"""MobileNetV1 (Howard et al., 2017, Table 1) with the SSD taps of TF's feature extractor.

C4 is the output of the 11th depthwise-separable layer (512 channels, stride 16), C5 the 13th (1024, stride 32).
"""

from __future__ import annotations

import torch
from torch import nn

from detector.backbones.layers import TF_BATCH_NORM, ConvBNAct, NormLayer, make_divisible

# (output channels, stride) of the 13 depthwise-separable layers after the 32-filter 3x3 stem.
LAYERS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),  # layer 11 is C4
    (1024, 2),
    (1024, 1),  # layer 13 is C5
)
STEM = 32
C4_LAYER = 11


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
        for out, stride in LAYERS:
            layers.append(DepthwiseSeparable(in_ch, scale(out), stride, norm_layer))
            in_ch = scale(out)
        self.layers = nn.ModuleList(layers)
        self.c4_channels = self.layers[C4_LAYER - 1].out_channels
        self.c5_channels = in_ch

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        c4 = x
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if i == C4_LAYER:
                c4 = x
        return c4, x
