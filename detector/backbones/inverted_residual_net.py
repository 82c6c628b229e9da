"""A network of inverted-residual blocks with an SSDLite C4/C5 tap: MobileNetV3, MobileNetV2 and MnasNet.

Each family file turns its paper table into a list of ``BlockSpec`` rows; this module builds the modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from detector.backbones.layers import TF_BATCH_NORM, ConvBNAct, InvertedResidual, NormLayer, activation


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block with its channel counts already scaled by the width multiplier."""

    in_ch: int
    exp_ch: int
    out_ch: int
    kernel: int
    stride: int
    act: str  # RE, RE6 or HS
    se_ch: int = 0  # squeeze width; 0 means no squeeze-and-excite
    residual: bool = True


@dataclass(frozen=True)
class ClassifierSpec:
    """ImageNet head after global pooling: [Linear hidden + act] -> dropout -> Linear num_classes."""

    hidden: int  # 0: no hidden layer (MobileNetV2, MnasNet)
    hidden_act: str
    dropout: float
    num_classes: int = 1000


class InvertedResidualNet(nn.Module):
    """stem -> blocks -> 1x1 last conv [-> pool -> classifier].

    Args:
        stem_ch, stem_act: the 3x3 stride-2 stem convolution.
        blocks: block rows in order.
        last_ch, last_act: the 1x1 convolution before pooling (the SSDLite C5 layer).
        c4_block: index into ``blocks`` whose expansion output is the SSDLite C4 tap (stride 16).
        classifier: the ImageNet head, or ``None`` for a detection backbone.
        se_gate: ``"hsigmoid"`` (MobileNetV3) or ``"sigmoid"`` (MnasNet).
    """

    def __init__(
        self,
        stem_ch: int,
        stem_act: str,
        blocks: list[BlockSpec],
        last_ch: int,
        last_act: str,
        c4_block: int,
        classifier: ClassifierSpec | None = None,
        se_gate: str = "hsigmoid",
        norm_layer: NormLayer = TF_BATCH_NORM,
    ) -> None:
        super().__init__()
        bn = {"norm_layer": norm_layer}
        self.specs = list(blocks)
        self.stem = ConvBNAct(3, stem_ch, 3, 2, act=stem_act, **bn)
        self.blocks = nn.ModuleList(
            InvertedResidual(s.in_ch, s.exp_ch, s.out_ch, s.kernel, s.stride, s.act, s.se_ch, se_gate, s.residual, **bn)
            for s in blocks
        )
        self.last_conv = ConvBNAct(blocks[-1].out_ch, last_ch, 1, act=last_act, **bn)
        self.c4_block = c4_block
        self.c4_channels = blocks[c4_block].exp_ch
        self.c5_channels = last_ch
        self.classifier: nn.Sequential | None = None
        if classifier is not None:
            layers: list[nn.Module] = []
            width = last_ch
            if classifier.hidden:
                layers += [nn.Linear(last_ch, classifier.hidden), activation(classifier.hidden_act)]
                width = classifier.hidden
            layers += [nn.Dropout(classifier.dropout), nn.Linear(width, classifier.num_classes)]
            self.classifier = nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float -> (N, last_ch, H/32, W/32): the C5 map."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.last_conv(x)

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (C4 (N, c4_channels, H/16, W/16), C5 (N, c5_channels, H/32, W/32))."""
        x = self.stem(x)
        for block in self.blocks[: self.c4_block]:
            x = block(x)
        tap_block = self.blocks[self.c4_block]
        c4 = tap_block.expansion(x)
        x = tap_block.rest(c4, x)
        for block in self.blocks[self.c4_block + 1 :]:
            x = block(x)
        return c4, self.last_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, num_classes); needs a classifier."""
        if self.classifier is None:
            raise RuntimeError("this network was built without a classifier; use forward_taps")
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1)
        return self.classifier(x)
