"""MobileNetV2 (Sandler et al., 2018, Table 2) as inverted-residual rows, with the SSDLite C4/C5 taps.

SSDLite on V2 (MobileNetV2 paper, section 6.2): C4 is the expansion of the first 160-channel block
("layer 15" in TF's naming, stride 16) and C5 is the last 1x1 convolution (1280 channels).
"""

from __future__ import annotations

from detector.backbones.inverted_residual_net import InvertedResidualNet, Stage, stage_blocks
from detector.backbones.layers import TF_BATCH_NORM, NormLayer, make_divisible

# Table 2 of the MobileNetV2 paper: Stage(t, c, n, s).
STAGES = (
    Stage(1, 16, 1, 1),
    Stage(6, 24, 2, 2),
    Stage(6, 32, 3, 2),
    Stage(6, 64, 4, 2),
    Stage(6, 96, 3, 1),
    Stage(6, 160, 3, 2, c4=True),  # its first block's expansion is C4
    Stage(6, 320, 1, 1),
)
STEM, LAST_CONV = 32, 1280


def mobilenet_v2_backbone(width: float = 1.0, norm_layer: NormLayer = TF_BATCH_NORM) -> InvertedResidualNet:
    """Detection backbone (no classifier). Every layer, the last 1x1 conv included, is scaled by the width
    multiplier and rounded to a multiple of 8 (at least 8): the rule that reproduces Table 6's 0.35 / 0.5 rows.
    """
    stem, last = make_divisible(STEM * width), make_divisible(LAST_CONV * width)
    specs, c4_block = stage_blocks(STAGES, stem, width, "RE6")
    return InvertedResidualNet(stem, "RE6", specs, last, "RE6", c4_block, norm_layer=norm_layer)
