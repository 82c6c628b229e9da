"""A network of inverted-residual blocks with an SSDLite C4/C5 tap: MobileNetV3, MobileNetV2 and MnasNet.

Each family file turns its paper table into a list of ``BlockSpec`` rows; this module builds the modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from detector.backbones.layers import TF_BATCH_NORM, ConvBNAct, InvertedResidual, NormLayer, activation, make_divisible


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


class Stage(NamedTuple):
    """A row of the MobileNetV2 and MnasNet tables: ``repeats`` blocks of ``expansion`` x their input width, the
    first with ``stride``; ``c4`` marks the stage whose first block's expansion is the SSDLite C4 tap."""

    expansion: int  # t
    out: int  # c
    repeats: int  # n
    stride: int  # s of the first block
    kernel: int = 3
    se: bool = False  # squeeze-and-excite, its width a share of the block's input channels
    skip: bool = True  # residual connections where the shapes allow them
    c4: bool = False


def stage_blocks(stages: tuple[Stage, ...], stem_ch: int, width: float, act: str,
                 se_ratio: float = 0.25) -> tuple[list[BlockSpec], int]:  # fmt: skip
    """The block rows of a stage table scaled by ``width`` (every width rounded to a multiple of 8, at least 8:
    the rule that reproduces Table 6's 0.35 / 0.5 rows), after a stem of ``stem_ch``; and the C4 block index."""
    specs: list[BlockSpec] = []
    in_ch, c4_block = stem_ch, -1
    for stage in stages:
        out = make_divisible(stage.out * width)
        if stage.c4:
            c4_block = len(specs)
        for i in range(stage.repeats):
            se = max(1, int(in_ch * se_ratio)) if stage.se else 0
            stride = stage.stride if i == 0 else 1
            specs.append(BlockSpec(in_ch, in_ch * stage.expansion, out, stage.kernel, stride, act=act, se_ch=se,
                                   residual=stage.skip))  # fmt: skip
            in_ch = out
    if c4_block < 0:
        raise ValueError("the stage table marks no C4 stage")
    return specs, c4_block


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
            InvertedResidual(
                s.in_ch,
                s.exp_ch,
                s.out_ch,
                s.kernel,
                s.stride,
                act=s.act,
                se_channels=s.se_ch,
                se_gate=se_gate,
                residual=s.residual,
                **bn,
            )  # fmt: skip
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
