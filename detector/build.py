"""Builders: the only place (with ``detector.training.setup`` and tools/) that reads a Config and turns it into
objects.

What a recipe describes is made here: the model, criterion and post-processor, the datasets, and a model with
its post-processing from a checkpoint's contents alone (``LoadedModel``). Assembling a training run is
``detector.training.setup``'s. Modules elsewhere take explicit, typed arguments; the values were checked when
the Config was made (``detector.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from detector import checkpoint, config
from detector.backbones.layers import NormLayer, batch_norm, use_tf_slim_gate
from detector.backbones.mnasnet import mnasnet_a1_backbone
from detector.backbones.mobilenet_v1 import MobileNetV1
from detector.backbones.mobilenet_v2 import mobilenet_v2_backbone
from detector.backbones.mobilenet_v3 import mobilenet_v3
from detector.backbones.padding import use_tf_same_padding
from detector.config import Config, ConfigError, DataConfig, LossConfig, ModelConfig
from detector.data.dataset import CocoDetection
from detector.data.transforms import build_transform
from detector.errors import UserError
from detector.ssd.anchors import layout_pairs
from detector.ssd.losses import FocalLoss, HardNegativeSoftmaxLoss
from detector.ssd.model import SSDLite, init_weights
from detector.ssd.postprocess import PostProcessor


def build_backbone(cfg: ModelConfig, norm_layer: NormLayer) -> nn.Module:
    if cfg.backbone == "mobilenet_v3_large":
        return mobilenet_v3("large", cfg.width, cfg.reduced_tail, num_classes=None, norm_layer=norm_layer)
    if cfg.backbone == "mobilenet_v3_small":
        return mobilenet_v3("small", cfg.width, cfg.reduced_tail, num_classes=None, norm_layer=norm_layer)
    if cfg.backbone == "mobilenet_v2":
        return mobilenet_v2_backbone(cfg.width, norm_layer=norm_layer)
    if cfg.backbone == "mnasnet_a1":
        return mnasnet_a1_backbone(cfg.width, norm_layer=norm_layer)
    return MobileNetV1(cfg.width, norm_layer=norm_layer)  # the last of config.Backbone


def extra_depths(cfg: ModelConfig) -> list[int]:
    """TF scales the extra layers with the width multiplier too, with ``min_depth`` as the floor."""
    return [max(cfg.min_depth, int(d * cfg.width)) for d in cfg.extra_depths]


def build_model(cfg: ModelConfig, init: bool = True) -> SSDLite:
    """The SSDLite of ``cfg``, initialised (``init``) or left for a state dict to fill."""
    if cfg.num_classes < 1:
        raise ConfigError(
            f"model.num_classes: expected at least 1 (0 only in a training recipe: the training set's), "
            f"got {cfg.num_classes}"
        )
    depths = extra_depths(cfg)
    norm_layer = batch_norm(cfg.bn_eps, cfg.bn_momentum)
    model = SSDLite(
        build_backbone(cfg, norm_layer),
        extra_depths=depths,
        anchor_pairs=layout_pairs(cfg.layout, 2 + len(depths)),
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        norm_layer=norm_layer,
    )
    if cfg.padding == "tf_same":
        use_tf_same_padding(model)
    if cfg.se_gate == "tf_slim":
        use_tf_slim_gate(model)
    if init:
        init_weights(model, cfg.head_init_std, cfg.class_bias_init, cfg.backbone_init_std)
    return model


def score_fn(loss: LossConfig) -> str:
    """The logits mean what the loss trained them to: sigmoid per class (focal) or softmax (with background)."""
    return "sigmoid" if loss.kind == "focal" else "softmax"


def build_criterion(cfg: LossConfig) -> FocalLoss | HardNegativeSoftmaxLoss:
    if cfg.kind == "focal":
        return FocalLoss(cfg.focal_alpha, cfg.focal_gamma, cfg.iou_threshold)
    return HardNegativeSoftmaxLoss(cfg.neg_to_pos, cfg.iou_threshold)


def build_postprocessor(cfg: Config, model: SSDLite) -> PostProcessor:
    """The post-processing of ``cfg`` for ``model``'s input size and anchors."""
    p = cfg.postprocess
    return PostProcessor(
        score_fn=score_fn(cfg.loss),
        score_thresh=p.score_thresh,
        nms_thresh=p.nms_thresh,
        topk_per_class=p.topk_per_class,
        max_detections=p.max_detections,
        input_size=cfg.model.image_size,
        anchors=model.anchors,
        per_class_limit=p.per_class_limit,
        clip_boxes=p.clip_boxes,
    )


def data_files(data: DataConfig, split: str) -> tuple[Path, Path]:
    """(annotation JSON, image folder) of ``split`` ("train" or "val"); explicit paths win over data_root."""
    ann, images = (data.train_json, data.train_images) if split == "train" else (data.val_json, data.val_images)
    if not ann and data.data_root:
        ann = str(Path(data.data_root) / "annotations" / f"instances_{split}2017.json")
    if not images and data.data_root:
        images = str(Path(data.data_root) / f"{split}2017")
    if not ann or not images:
        raise UserError(f"no {split} data: give --data-root, or --{split}-json and --{split}-images")
    ann_path, image_dir = Path(ann), Path(images)
    layout = (
        f"; --data-root DIR (here {data.data_root}) holds COCO 2017's layout: DIR/annotations/"
        f"instances_train2017.json, DIR/annotations/instances_val2017.json, DIR/train2017/, DIR/val2017/; "
        f"or give the files with --{split}-json FILE and --{split}-images DIR"
        if data.data_root
        else ""
    )
    if not ann_path.is_file():
        raise UserError(f"{ann_path}: annotation file not found{layout}")
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: image folder not found{layout}")
    return ann_path, image_dir


@dataclass
class LoadedModel:
    """A trained model with everything needed to run it: ``model`` (SSDLite in eval mode, BatchNorm as
    trained), ``post`` (its post-processor), ``categories`` (label k is ``categories[k - 1]``: {"id", "name"}),
    ``config`` (the resolved recipe it was trained with) and ``source`` (what it was loaded from, for messages
    and exported files)."""

    model: SSDLite
    post: PostProcessor
    categories: list[dict]
    config: Config
    source: str = ""


def model_from_checkpoint(ckpt: dict, source: str) -> LoadedModel:
    """The ``LoadedModel`` of a checkpoint's contents (``model``, ``config``, ``categories``; the EMA of the
    weights instead of ``model`` when the run kept one); ``source`` names it in errors."""
    try:
        cfg = config.from_dict(ckpt["config"])
    except ConfigError as exc:
        raise UserError(f"{source}: its config cannot be used: {exc}") from None
    model = build_model(cfg.model, init=False)
    try:
        model.load_state_dict(checkpoint.shipped_weights(ckpt))
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not fit the model its config describes: {str(exc)[:300]}") from None
    model.eval()
    return LoadedModel(model, build_postprocessor(cfg, model), ckpt["categories"], cfg, source)


def build_datasets(cfg: Config, validate: bool = True) -> tuple[CocoDetection, CocoDetection | None]:
    """(training set with the recipe's augmentation, validation set with a plain resize or None).

    ``model.num_classes`` must equal the training set's number of categories (the error says which to change);
    0 in the recipe takes the training set's number, and ``cfg`` then holds it.
    """
    train_json, train_images = data_files(cfg.data, "train")
    size = cfg.model.image_size
    transform = build_transform(size, cfg.data.augment, cfg.data.zoom_out_max, cfg.data.resize)
    id_slots = cfg.data.class_slots == "category_id"
    exif = cfg.data.exif_orientation
    train_set = CocoDetection(train_json, train_images, transform, seed=cfg.train.seed, preflight=cfg.data.preflight,
                              id_slots=id_slots, exif=exif)  # fmt: skip
    found = len(train_set.categories)
    slots = " class slots (data.class_slots: category_id)" if id_slots else " categories"
    if cfg.model.num_classes == 0:  # the recipe asks for the training set's classes
        cfg.model.num_classes = found
    if cfg.model.num_classes != found:
        raise ConfigError(
            f"model.num_classes is {cfg.model.num_classes}, but {train_json} has {found}{slots}: "
            f"set model.num_classes={found} in the recipe (or --set model.num_classes={found}), or train on data "
            f"with {cfg.model.num_classes} categories"
        )
    val_set = None
    if validate:
        val_json, val_images = data_files(cfg.data, "val")
        val_transform = build_transform(size, resize=cfg.data.resize)
        val_set = CocoDetection(val_json, val_images, val_transform, preflight=cfg.data.preflight, id_slots=id_slots,
                                exif=exif)  # fmt: skip
    return train_set, val_set


def build_eval_dataset(cfg: Config, data: DataConfig) -> CocoDetection:
    """The val split of ``data`` with the plain resize to the model of ``cfg`` (by its ``data.resize``)."""
    ann, images = data_files(data, "val")
    transform = build_transform(cfg.model.image_size, resize=cfg.data.resize)
    return CocoDetection(ann, images, transform, id_slots=data.class_slots == "category_id", exif=data.exif_orientation)
