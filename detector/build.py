"""Builders: the only place (with tools/) that reads a Config and turns it into modules."""

from __future__ import annotations

from torch import nn

from detector.backbones.mnasnet import mnasnet_a1_backbone
from detector.backbones.mobilenet_v1 import MobileNetV1
from detector.backbones.mobilenet_v2 import mobilenet_v2_backbone
from detector.backbones.mobilenet_v3 import mobilenet_v3
from detector.config import Config, ConfigError, LossConfig, ModelConfig, PostprocessConfig
from detector.ssd.anchors import layout_pairs
from detector.ssd.losses import FocalLoss, HardNegativeSoftmaxLoss
from detector.ssd.model import SSDLite, init_weights
from detector.ssd.postprocess import PostProcessor

BACKBONES = ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mnasnet_a1", "mobilenet_v1")


def build_backbone(cfg: ModelConfig) -> nn.Module:
    bn = {"bn_eps": cfg.bn_eps, "bn_momentum": cfg.bn_momentum}
    if cfg.backbone in ("mobilenet_v3_large", "mobilenet_v3_small"):
        variant = cfg.backbone.rsplit("_", 1)[1]
        return mobilenet_v3(variant, cfg.width, cfg.reduced_tail, num_classes=None, **bn)
    if cfg.reduced_tail:
        raise ConfigError(f"model.reduced_tail: only MobileNetV3 has a reduced tail, not {cfg.backbone!r}")
    if cfg.backbone == "mobilenet_v2":
        return mobilenet_v2_backbone(cfg.width, **bn)
    if cfg.backbone == "mnasnet_a1":
        return mnasnet_a1_backbone(cfg.width, **bn)
    if cfg.backbone == "mobilenet_v1":
        return MobileNetV1(cfg.width, **bn)
    raise ConfigError(f"model.backbone: unknown {cfg.backbone!r}; expected one of {', '.join(BACKBONES)}")


def extra_depths(cfg: ModelConfig) -> list[int]:
    """TF scales the extra layers with the width multiplier too, with ``min_depth`` as the floor."""
    return [max(cfg.min_depth, int(d * cfg.width)) for d in cfg.extra_depths]


def build_model(cfg: ModelConfig, init: bool = True) -> SSDLite:
    if cfg.layout not in ("paper", "torchvision"):
        raise ConfigError(f"model.layout: unknown {cfg.layout!r}; expected 'paper' or 'torchvision'")
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 32:
        raise ConfigError(f"model.image_size: expected [H, W] of at least 32 pixels, got {cfg.image_size}")
    if cfg.num_classes < 1:
        raise ConfigError(f"model.num_classes: expected at least 1, got {cfg.num_classes}")
    depths = extra_depths(cfg)
    model = SSDLite(
        build_backbone(cfg),
        depths,
        layout_pairs(cfg.layout, 2 + len(depths)),
        cfg.num_classes,
        (cfg.image_size[0], cfg.image_size[1]),
        cfg.bn_eps,
        cfg.bn_momentum,
    )
    if init:
        init_weights(model, cfg.head_init_std, cfg.class_bias_init)
    return model


def score_fn(loss: LossConfig) -> str:
    """The logits mean what the loss trained them to: sigmoid per class (focal) or softmax (with background)."""
    return "sigmoid" if loss.kind == "focal" else "softmax"


def build_loss(cfg: LossConfig) -> FocalLoss | HardNegativeSoftmaxLoss:
    if cfg.kind == "focal":
        return FocalLoss(cfg.focal_alpha, cfg.focal_gamma, cfg.iou_threshold)
    if cfg.kind == "softmax_hnm":
        return HardNegativeSoftmaxLoss(cfg.neg_to_pos, cfg.iou_threshold)
    raise ConfigError(f"loss.kind: unknown {cfg.kind!r}; expected 'focal' or 'softmax_hnm'")


def build_postprocessor(cfg: PostprocessConfig, loss: LossConfig) -> PostProcessor:
    return PostProcessor(score_fn(loss), cfg.score_thresh, cfg.nms_thresh, cfg.topk_per_class, cfg.max_detections)


def build_all(cfg: Config) -> tuple[SSDLite, FocalLoss | HardNegativeSoftmaxLoss, PostProcessor]:
    return build_model(cfg.model), build_loss(cfg.loss), build_postprocessor(cfg.postprocess, cfg.loss)
