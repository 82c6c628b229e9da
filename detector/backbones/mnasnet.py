"""MnasNet-A1 (Tan et al., 2019, Figure 7) as inverted-residual rows, with the SSDLite C4/C5 taps.

Table 6's MnasNet row is the A1 model (with squeeze-and-excite); torchvision's ``mnasnet1_0`` is the
SE-free B1 variant, so the rows are written here. Taps as for MobileNetV2: C4 is the expansion of the
first 160-channel block (stride 16), C5 the last 1x1 convolution.
"""

from __future__ import annotations

from detector.backbones.inverted_residual_net import InvertedResidualNet, Stage, stage_blocks
from detector.backbones.layers import TF_BATCH_NORM, NormLayer, make_divisible

# The TF reference rows "r1_k3_s11_e1_i32_o16_noskip" ... "r1_k3_s11_e6_i160_o320": Stage(e, o, r, s, k, se).
STAGES = (
    Stage(1, 16, 1, 1, 3, skip=False),  # SepConv, no skip
    Stage(6, 24, 2, 2, 3),
    Stage(3, 40, 3, 2, 5, se=True),
    Stage(6, 80, 4, 2, 3),
    Stage(6, 112, 2, 1, 3, se=True),
    Stage(6, 160, 3, 2, 5, se=True, c4=True),  # its first block's expansion is C4
    Stage(6, 320, 1, 1, 3),
)
STEM, LAST_CONV = 32, 1280
SE_RATIO = 0.25  # of the block's input channels, as in the MnasNet reference code


def mnasnet_a1_backbone(width: float = 1.0, norm_layer: NormLayer = TF_BATCH_NORM) -> InvertedResidualNet:
    """Detection backbone (no classifier); every width, the last conv included, follows the multiplier."""
    stem, last = make_divisible(STEM * width), make_divisible(LAST_CONV * width)
    specs, c4_block = stage_blocks(STAGES, stem, width, "RE", SE_RATIO)
    return InvertedResidualNet(stem, "RE", specs, last, "RE", c4_block, se_gate="sigmoid", norm_layer=norm_layer)
