"""MnasNet-A1 (Tan et al., 2019, Figure 7) as inverted-residual rows, with the SSDLite C4/C5 taps.

Table 6's MnasNet row is the A1 model (with squeeze-and-excite); torchvision's ``mnasnet1_0`` is the
SE-free B1 variant, so the rows are written here. Taps as for MobileNetV2: C4 is the expansion of the
first 160-channel block (stride 16), C5 the last 1x1 convolution.
"""

from __future__ import annotations

from typing import NamedTuple

from detector.backbones.inverted_residual_net import BlockSpec, InvertedResidualNet
from detector.backbones.layers import TF_BATCH_NORM, NormLayer, make_divisible


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expansion: int
    out: int
    se: bool


# The TF reference rows "r1_k3_s11_e1_i32_o16_noskip" ... "r1_k3_s11_e6_i160_o320".
STAGES = (
    Stage(1, 3, 1, 1, 16, False),  # SepConv, no skip
    Stage(2, 3, 2, 6, 24, False),
    Stage(3, 5, 2, 3, 40, True),
    Stage(4, 3, 2, 6, 80, False),
    Stage(2, 3, 1, 6, 112, True),
    Stage(3, 5, 2, 6, 160, True),  # its first block's expansion is C4
    Stage(1, 3, 1, 6, 320, False),
)
STEM, LAST_CONV = 32, 1280
SE_RATIO = 0.25  # of the block's input channels, as in the MnasNet reference code


def mnasnet_a1_backbone(width: float = 1.0, norm_layer: NormLayer = TF_BATCH_NORM) -> InvertedResidualNet:
    """Detection backbone (no classifier); every width, the last conv included, follows the multiplier."""

    def scale(c: float) -> int:
        return make_divisible(c * width)

    specs: list[BlockSpec] = []
    in_ch = scale(STEM)
    c4_block = 0
    for stage in STAGES:
        out = scale(stage.out)
        if stage.out == 160:
            c4_block = len(specs)
        for i in range(stage.repeats):
            se = max(1, int(in_ch * SE_RATIO)) if stage.se else 0
            specs.append(
                BlockSpec(
                    in_ch,
                    in_ch * stage.expansion,
                    out,
                    stage.kernel,
                    stage.stride if i == 0 else 1,
                    "RE",
                    se,
                    residual=stage.expansion > 1,
                )
            )
            in_ch = out
    return InvertedResidualNet(scale(STEM), "RE", specs, scale(LAST_CONV), "RE", c4_block, None, "sigmoid", norm_layer)
