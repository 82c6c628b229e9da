"""Conversion of torchvision's ``ssdlite320_mobilenet_v3_large`` weights into our ``torchvision`` layout.

torchvision splits MobileNetV3-Large† at the C4 tap: ``backbone.features.0`` runs features[0..12] and the 1x1
expansion of features[13]; ``backbone.features.1`` runs the rest of features[13], features[14..15] and the
last conv. Extra layers and the per-level predictors map one to one onto ours.
"""

from __future__ import annotations

import torch

from detector.backbones.mobilenet_v3 import torchvision_key_map
from detector.checkpoint import rename_by_prefix
from detector.config import Config, LossConfig, ModelConfig, PostprocessConfig
from detector.errors import UserError
from detector.ssd.model import SSDLite

# torchvision's SSDLite320 defaults: score > 0.001, 300 per class, NMS 0.55, 300 per image.
TORCHVISION_CONFIG = Config(
    model=ModelConfig(
        backbone="mobilenet_v3_large",
        width=1.0,
        reduced_tail=True,
        layout="torchvision",
        num_classes=90,
        image_size=(320, 320),
    ),
    loss=LossConfig(kind="softmax_hnm"),
    postprocess=PostprocessConfig(
        score_thresh=0.001, nms_thresh=0.55, topk_per_class=300, max_detections=300, per_class_limit="before_nms"
    ),
)


def _backbone_prefixes(model: SSDLite) -> dict[str, str]:
    """torchvision detection-backbone prefix -> our prefix."""
    c4_feature = model.backbone.c4_block + 1  # torchvision's features index of the C4 bneck (features[0]: stem)
    classifier_map = torchvision_key_map(model.backbone)
    out: dict[str, str] = {}
    for tv, ours in classifier_map.items():
        if not tv.startswith("features."):
            continue
        index = int(tv.split(".")[1])
        rest = tv.split(".", 2)[2]  # e.g. "block.1.0." or "0."
        if index < c4_feature:
            out[f"backbone.features.0.{index}.{rest}"] = "backbone." + ours
        elif index == c4_feature:
            j = int(rest.split(".")[1])  # block.j.
            tail = rest.split(".", 2)[2]
            if j == 0:
                out[f"backbone.features.0.{c4_feature}.{tail}"] = "backbone." + ours
            else:  # slicing an nn.Sequential keeps its keys: block[1:] still numbers from 1
                out[f"backbone.features.1.0.{j}.{tail}"] = "backbone." + ours
        else:
            out[f"backbone.features.1.{index - c4_feature}.{rest}"] = "backbone." + ours
    return out


def convert_state_dict(state: dict[str, torch.Tensor], model: SSDLite) -> dict[str, torch.Tensor]:
    """torchvision SSDLite state dict -> our state dict for ``model`` (strictly every key, equal shapes)."""
    prefixes = _backbone_prefixes(model)
    for k in range(len(model.extras)):
        for j in range(3):
            prefixes[f"backbone.extra.{k}.{j}.0."] = f"extras.{k}.{j}.conv."
            prefixes[f"backbone.extra.{k}.{j}.1."] = f"extras.{k}.{j}.bn."
    for level in range(len(model.box_heads)):
        for tv, ours in (("classification_head", "cls_heads"), ("regression_head", "box_heads")):
            prefixes[f"head.{tv}.module_list.{level}.0.0."] = f"{ours}.{level}.0.conv."
            prefixes[f"head.{tv}.module_list.{level}.0.1."] = f"{ours}.{level}.0.bn."
            prefixes[f"head.{tv}.module_list.{level}.1."] = f"{ours}.{level}.1."
    converted, unmatched = rename_by_prefix(state, prefixes)
    if unmatched:
        raise UserError(f"torchvision key {unmatched[0]!r} has no counterpart: not an ssdlite320_mobilenet_v3_large?")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise UserError(f"the state dict lacks {len(missing)} tensors, e.g. {missing[:3]}")
    for key, value in converted.items():
        if expected[key].shape != value.shape:
            raise UserError(f"{key}: shape {tuple(value.shape)} where the model has {tuple(expected[key].shape)}")
    return converted


def coco_categories() -> list[dict]:
    """torchvision's 91-slot COCO map: label k (1..90) is COCO category id k ("N/A" for the 10 unused ids)."""
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    names = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]  # [0] is "__background__"
    return [{"id": i, "name": name} for i, name in enumerate(names) if i > 0]
