"""MobileNetV3 Large and Small, written from Tables 1 and 2 of the paper (Howard et al., 2019).

The rows below are the tables themselves: kernel, expansion size, output channels, squeeze-and-excite,
non-linearity (RE = ReLU, HS = h-swish) and stride of every bneck. The "†" reduced tail (section 6.3) halves the
channels of the blocks between C4 and C5 and of the last 1x1 convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from detector.backbones.inverted_residual_net import BlockSpec, ClassifierSpec, InvertedResidualNet
from detector.backbones.layers import TF_BATCH_NORM, NormLayer, make_divisible
from detector.checkpoint import rename_by_prefix


class Bneck(NamedTuple):
    kernel: int
    exp: int
    out: int
    se: bool
    act: str
    stride: int
    c4: bool = False  # its 1x1 expansion output is the SSDLite C4 tap (section 6.3)


# Table 1: MobileNetV3-Large. Input 224^2 x 3 -> conv2d 3x3 16 HS s2 -> these -> conv2d 1x1 960 HS.
LARGE = (
    Bneck(3, 16, 16, False, "RE", 1),
    Bneck(3, 64, 24, False, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 1),
    Bneck(5, 72, 40, True, "RE", 2),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(3, 240, 80, False, "HS", 2),
    Bneck(3, 200, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 480, 112, True, "HS", 1),
    Bneck(3, 672, 112, True, "HS", 1),
    Bneck(5, 672, 160, True, "HS", 2, c4=True),  # the 13th bneck
    Bneck(5, 960, 160, True, "HS", 1),
    Bneck(5, 960, 160, True, "HS", 1),
)
LARGE_LAST_CONV, LARGE_HIDDEN = 960, 1280

# Table 2: MobileNetV3-Small. The last 1x1 conv 576 carries no SE in the TF code (nor in torchvision).
SMALL = (
    Bneck(3, 16, 16, True, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 2),
    Bneck(3, 88, 24, False, "RE", 1),
    Bneck(5, 96, 40, True, "HS", 2),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 120, 48, True, "HS", 1),
    Bneck(5, 144, 48, True, "HS", 1),
    Bneck(5, 288, 96, True, "HS", 2, c4=True),  # the 9th bneck
    Bneck(5, 576, 96, True, "HS", 1),
    Bneck(5, 576, 96, True, "HS", 1),
)
SMALL_LAST_CONV, SMALL_HIDDEN = 576, 1024

STEM_CHANNELS = 16  # section 5.2: 16 filters with h-swish instead of 32 with ReLU


def _rows(variant: str) -> tuple[tuple[Bneck, ...], int, int]:
    if variant == "large":
        return LARGE, LARGE_LAST_CONV, LARGE_HIDDEN
    if variant == "small":
        return SMALL, SMALL_LAST_CONV, SMALL_HIDDEN
    raise ValueError(f"unknown MobileNetV3 variant {variant!r}; expected 'large' or 'small'")


def block_specs(variant: str, width: float = 1.0, reduced_tail: bool = False) -> tuple[list[BlockSpec], int, int]:
    """Scaled block rows, the last-conv width and the C4 block index.

    † (``reduced_tail``): the last three bnecks keep the C4 expansion but halve their outputs and the
    expansions after it; the last conv follows (6x the last output).
    """
    rows, last_conv, _ = _rows(variant)
    c4_block = next(i for i, row in enumerate(rows) if row.c4)
    specs: list[BlockSpec] = []
    in_ch = make_divisible(STEM_CHANNELS * width)
    for i, row in enumerate(rows):
        exp, out = row.exp, row.out
        if reduced_tail and i >= c4_block:
            out //= 2
            if i > c4_block:
                exp //= 2
        exp_ch, out_ch = make_divisible(exp * width), make_divisible(out * width)
        se_ch = make_divisible(exp_ch // 4) if row.se else 0
        specs.append(BlockSpec(in_ch, exp_ch, out_ch, row.kernel, row.stride, row.act, se_ch))
        in_ch = out_ch
    last = make_divisible((last_conv // 2 if reduced_tail else last_conv) * width)
    return specs, last, c4_block


def mobilenet_v3(
    variant: str = "large",
    width: float = 1.0,
    reduced_tail: bool = False,
    num_classes: int | None = 1000,
    dropout: float = 0.2,
    norm_layer: NormLayer = TF_BATCH_NORM,
) -> InvertedResidualNet:
    """MobileNetV3 ``"large"`` or ``"small"``; ``num_classes=None`` builds the detection backbone only.

    Input (N, 3, H, W) float normalised by the caller; classifier output (N, num_classes) logits.
    """
    specs, last, c4_block = block_specs(variant, width, reduced_tail)
    classifier = None
    if num_classes is not None:
        _, _, hidden = _rows(variant)
        # torchvision's rule: the hidden layer follows the width multiplier and the † halving too
        hidden = make_divisible((hidden // 2 if reduced_tail else hidden) * width)
        classifier = ClassifierSpec(hidden, "HS", dropout, num_classes)
    return InvertedResidualNet(
        make_divisible(STEM_CHANNELS * width),
        "HS",
        specs,
        last_ch=last,
        last_act="HS",
        c4_block=c4_block,
        classifier=classifier,
        se_gate="hsigmoid",
        norm_layer=norm_layer,
    )


def torchvision_key_map(net: InvertedResidualNet) -> dict[str, str]:
    """Our parameter/buffer prefix for each prefix of torchvision's ``mobilenet_v3_*`` state dict."""
    mapping = {"features.0.0.": "stem.conv.", "features.0.1.": "stem.bn."}
    for i, (spec, block) in enumerate(zip(net.specs, net.blocks)):
        tv = f"features.{i + 1}.block."
        parts = (["expand"] if block.expand is not None else []) + ["depthwise"]
        parts += ["se"] if spec.se_ch else []
        parts += ["project"]
        for j, part in enumerate(parts):
            ours = f"blocks.{i}.{part}."
            if part == "se":
                mapping[f"{tv}{j}.fc1."] = ours + "reduce."
                mapping[f"{tv}{j}.fc2."] = ours + "expand."
            else:
                mapping[f"{tv}{j}.0."] = ours + "conv."
                mapping[f"{tv}{j}.1."] = ours + "bn."
    last = len(net.specs) + 1
    mapping[f"features.{last}.0."] = "last_conv.conv."
    mapping[f"features.{last}.1."] = "last_conv.bn."
    mapping["classifier.0."] = "classifier.0."
    mapping["classifier.3."] = "classifier.3."
    return mapping


def load_torchvision_state_dict(net: InvertedResidualNet, state: dict[str, torch.Tensor]) -> None:
    """Load torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small`` ImageNet weights into ``net``.

    Strict: every tensor of both sides must be matched, with equal shapes.
    """
    converted, unmatched = rename_by_prefix(state, torchvision_key_map(net))
    if unmatched:
        raise KeyError(f"torchvision key {unmatched[0]!r} has no counterpart in this MobileNetV3")
    net.load_state_dict(converted, strict=True)
