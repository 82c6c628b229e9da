"""SSDLite: backbone taps (C4, C5) -> four extra layers -> per-level depthwise-separable predictors.

The model maps (N, 3, H, W) float RGB images in [0, 1], already resized to ``image_size``, to raw outputs:
box codes (N, A, 4) and class logits (N, A, K) with K = num_classes + 1 (slot 0: background). It returns the
same in train and eval mode; loss and post-processing are separate objects.
"""

from __future__ import annotations

import torch
from torch import nn

from detector.backbones.layers import TF_BATCH_NORM, ConvBNAct, NormLayer
from detector.ssd.anchors import grid_anchors


class ExtraLayer(nn.Sequential):
    """1x1 to depth/2 -> 3x3 depthwise stride 2 -> 1x1 to depth, each with BN and ReLU6 (section 6.3)."""

    def __init__(self, in_ch: int, depth: int, norm_layer: NormLayer = TF_BATCH_NORM) -> None:
        mid = depth // 2
        bn = {"norm_layer": norm_layer}
        super().__init__(
            ConvBNAct(in_ch, mid, 1, act="RE6", **bn),
            ConvBNAct(mid, mid, 3, 2, groups=mid, act="RE6", **bn),
            ConvBNAct(mid, depth, 1, act="RE6", **bn),
        )


class Predictor(nn.Sequential):
    """3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias to ``anchors * values`` channels."""

    def __init__(self, in_ch: int, anchors: int, values: int, norm_layer: NormLayer = TF_BATCH_NORM) -> None:
        super().__init__(
            ConvBNAct(in_ch, in_ch, 3, groups=in_ch, act="RE6", norm_layer=norm_layer),
            nn.Conv2d(in_ch, anchors * values, 1),
        )
        self.values = values

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H * W * anchors * values): location, then anchor, then value, as the anchors
        are laid out. Channels-last memory makes this a view, and an exported graph needs no shape arithmetic
        (channels-last runtimes cancel the transpose)."""
        return self(x).permute(0, 2, 3, 1).flatten(1)


def _stride2(size: int) -> int:
    """Output size of every stride-2 conv here (kernel k, padding k // 2)."""
    return (size + 1) // 2


def feature_sizes(image_size: tuple[int, int], num_extra: int) -> list[tuple[int, int]]:
    """(H, W) of C4 (stride 16), C5 (stride 32) and each extra layer for an input of ``image_size``."""
    h, w = image_size
    for _ in range(4):
        h, w = _stride2(h), _stride2(w)
    sizes = [(h, w)]
    for _ in range(1 + num_extra):
        h, w = _stride2(h), _stride2(w)
        sizes.append((h, w))
    return sizes


class SSDLite(nn.Module):
    """Args:
    backbone: module with ``forward_taps(x) -> (C4, C5)`` and ``c4_channels`` / ``c5_channels``.
    extra_depths: output depth of each extra layer (512, 256, 256, 128 in the paper).
    anchor_pairs: per level, the relative (w, h) of its anchors (see ``detector.ssd.anchors``).
    num_classes: foreground classes; the class predictors have num_classes + 1 slots.
    image_size: (H, W) of the model input; anchors are fixed for it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        extra_depths: list[int],
        anchor_pairs: list[list[tuple[float, float]]],
        num_classes: int,
        image_size: tuple[int, int],
        norm_layer: NormLayer = TF_BATCH_NORM,
    ) -> None:
        super().__init__()
        if len(anchor_pairs) != 2 + len(extra_depths):
            raise ValueError(f"{len(anchor_pairs)} anchor levels for {2 + len(extra_depths)} feature maps")
        self.backbone = backbone
        bn = {"norm_layer": norm_layer}
        channels = [backbone.c4_channels, backbone.c5_channels]
        extras = []
        for depth in extra_depths:
            extras.append(ExtraLayer(channels[-1], depth, **bn))
            channels.append(depth)
        self.extras = nn.ModuleList(extras)
        self.num_classes = num_classes
        self.image_size = image_size
        self.box_heads = nn.ModuleList(Predictor(c, len(p), 4, **bn) for c, p in zip(channels, anchor_pairs))
        self.cls_heads = nn.ModuleList(
            Predictor(c, len(p), num_classes + 1, **bn) for c, p in zip(channels, anchor_pairs)
        )
        self.feature_sizes = feature_sizes(self.image_size, len(extra_depths))
        self.register_buffer("anchors", grid_anchors(self.feature_sizes, anchor_pairs, self.image_size), False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> the 6 feature maps, C4 first."""
        c4, c5 = self.backbone.forward_taps(images * 2.0 - 1.0)  # pixels to [-1, 1] (section 4)
        maps = [c4, c5]
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) float in [0, 1] -> (box codes (N, A, 4), class logits (N, A, num_classes + 1))."""
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"input of {tuple(images.shape[-2:])} pixels; this model takes {self.image_size}")
        maps = self.features(images)
        n = images.shape[0]
        boxes = torch.cat([head.flat(m) for head, m in zip(self.box_heads, maps)], 1)
        logits = torch.cat([head.flat(m) for head, m in zip(self.cls_heads, maps)], 1)
        a = len(self.anchors)  # a Python int: exported graphs keep a static anchor dimension
        return boxes.view(n, a, self.box_heads[0].values), logits.view(n, a, self.cls_heads[0].values)


def init_weights(model: SSDLite, head_std: float = 0.03, class_bias: float = 0.0, backbone_std: float = 0.0) -> None:
    """Backbone: He (fan-out) convs, or with ``backbone_std`` > 0 TF's truncated normal (std ``backbone_std``,
    redrawn beyond 2 std; the paper's TF recipe uses 0.03, docs/paper.md section 4), unit BN; extra layers and
    predictors: N(0, head_std) as torchvision.

    ``class_bias`` starts every class logit there (the focal-loss prior, e.g. -4.6 = log(0.01 / 0.99));
    the paper's TF head leaves it at 0 (docs/paper.md, section 4).
    """
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d) and backbone_std > 0:
            nn.init.trunc_normal_(m.weight, 0.0, backbone_std, -2 * backbone_std, 2 * backbone_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for part in (model.extras, model.box_heads, model.cls_heads):
        for m in part.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, head_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    for head in model.cls_heads:
        nn.init.constant_(head[-1].bias, class_bias)
