"""Builders: the only place (with tools/) that reads a Config and turns it into objects.

Everything a recipe describes is made here: the model, criterion and post-processor, the datasets and their
loaders, the optimiser, schedule, gradient scaler and EMA of a training run, and a detector from a
checkpoint alone. Modules elsewhere take explicit, typed arguments.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from detector import checkpoint, config
from detector.backbones.layers import NormLayer, batch_norm
from detector.backbones.mnasnet import mnasnet_a1_backbone
from detector.backbones.mobilenet_v1 import MobileNetV1
from detector.backbones.mobilenet_v2 import mobilenet_v2_backbone
from detector.backbones.mobilenet_v3 import mobilenet_v3
from detector.backbones.padding import PADDINGS, use_tf_same_padding
from detector.config import Config, ConfigError, DataConfig, LossConfig, ModelConfig
from detector.data.dataset import CocoDetection, collate, eval_loader
from detector.data.transforms import build_transform
from detector.errors import UserError
from detector.evaluation.coco_eval import load_coco
from detector.ssd.anchors import layout_pairs
from detector.ssd.detections import LabelMap
from detector.ssd.losses import FocalLoss, HardNegativeSoftmaxLoss
from detector.ssd.model import SSDLite, init_weights
from detector.ssd.postprocess import PER_CLASS_LIMITS, PostProcessor
from detector.training.distributed import DistInfo
from detector.training.engine import StepSettings
from detector.training.loop import Training
from detector.training.optim import build_optimizer, warmup_cosine
from detector.training.sampler import ResumableSampler

BACKBONES = ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mnasnet_a1", "mobilenet_v1")


def build_backbone(cfg: ModelConfig, norm_layer: NormLayer) -> nn.Module:
    bn = {"norm_layer": norm_layer}
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
        raise ConfigError(
            f"model.num_classes: expected at least 1 (0 only in a training recipe: the training set's), "
            f"got {cfg.num_classes}"
        )
    depths = extra_depths(cfg)
    norm_layer = batch_norm(cfg.bn_eps, cfg.bn_momentum)
    model = SSDLite(
        build_backbone(cfg, norm_layer),
        depths,
        layout_pairs(cfg.layout, 2 + len(depths)),
        cfg.num_classes,
        cfg.image_size,
        norm_layer,
    )
    if cfg.padding not in PADDINGS:
        raise ConfigError(f"model.padding: unknown {cfg.padding!r}; expected symmetric or tf_same")
    if cfg.padding == "tf_same":
        use_tf_same_padding(model)
    if init:
        init_weights(model, cfg.head_init_std, cfg.class_bias_init, cfg.backbone_init_std)
    return model


def score_fn(loss: LossConfig) -> str:
    """The logits mean what the loss trained them to: sigmoid per class (focal) or softmax (with background)."""
    return "sigmoid" if loss.kind == "focal" else "softmax"


def build_criterion(cfg: LossConfig) -> FocalLoss | HardNegativeSoftmaxLoss:
    if cfg.kind == "focal":
        return FocalLoss(cfg.focal_alpha, cfg.focal_gamma, cfg.iou_threshold)
    if cfg.kind == "softmax_hnm":
        return HardNegativeSoftmaxLoss(cfg.neg_to_pos, cfg.iou_threshold)
    raise ConfigError(f"loss.kind: unknown {cfg.kind!r}; expected 'focal' or 'softmax_hnm'")


def build_postprocessor(cfg: Config, anchors: torch.Tensor | None) -> PostProcessor:
    """The post-processing of ``cfg`` for the model's input size and ``anchors`` (the model's ``anchors``;
    None for one that only takes decoded boxes)."""
    p = cfg.postprocess
    if p.per_class_limit not in PER_CLASS_LIMITS:
        raise ConfigError(
            f"postprocess.per_class_limit: unknown {p.per_class_limit!r}; expected after_nms or before_nms"
        )
    return PostProcessor(
        score_fn(cfg.loss),
        p.score_thresh,
        p.nms_thresh,
        p.topk_per_class,
        p.max_detections,
        cfg.model.image_size,
        anchors,
        per_class_limit=p.per_class_limit,
    )


def build_all(cfg: Config) -> tuple[SSDLite, FocalLoss | HardNegativeSoftmaxLoss, PostProcessor]:
    """(model, criterion, post-processor) of a recipe."""
    model = build_model(cfg.model)
    return model, build_criterion(cfg.loss), build_postprocessor(cfg, model.anchors)


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


def detector_from_checkpoint(ckpt: dict, source: str | Path):
    """(model in eval mode, post-processor, categories, Config) from a checkpoint's contents alone; ``source``
    names it in errors."""
    try:
        cfg = config.from_dict(ckpt["config"])
    except ConfigError as exc:
        raise UserError(f"{source}: its config cannot be used: {exc}") from None
    model = build_model(cfg.model, init=False)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not fit the model its config describes: {str(exc)[:300]}") from None
    model.eval()
    return model, build_postprocessor(cfg, model.anchors), ckpt["categories"], cfg


def load_detector(path: str | Path):
    """(model in eval mode, post-processor, categories, Config) from a checkpoint file alone."""
    return detector_from_checkpoint(checkpoint.load(path), path)


def build_datasets(cfg: Config, validate: bool = True) -> tuple[CocoDetection, CocoDetection | None]:
    """(training set with the recipe's augmentation, validation set with a plain resize or None).

    ``model.num_classes`` must equal the training set's number of categories (the error says which to change);
    0 in the recipe takes the training set's number, and ``cfg`` then holds it.
    """
    train_json, train_images = data_files(cfg.data, "train")
    size, augment = cfg.model.image_size, cfg.data.augment
    transform = build_transform(size, augment, cfg.data.zoom_out_max)
    if cfg.data.class_slots not in ("contiguous", "category_id"):
        raise ConfigError(f"data.class_slots: unknown {cfg.data.class_slots!r}; expected contiguous or category_id")
    id_slots = cfg.data.class_slots == "category_id"
    exif = cfg.data.exif_orientation
    train_set = CocoDetection(train_json, train_images, transform, cfg.train.seed, cfg.data.preflight, id_slots, exif)
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
        val_set = CocoDetection(val_json, val_images, build_transform(size), preflight=cfg.data.preflight,
                                id_slots=id_slots, exif=exif)  # fmt: skip
    return train_set, val_set


def build_eval_dataset(cfg: Config, data: DataConfig) -> CocoDetection:
    """The val split of ``data`` with the plain resize to the model of ``cfg``."""
    ann, images = data_files(data, "val")
    return CocoDetection(ann, images, build_transform(cfg.model.image_size), id_slots=data.class_slots == "category_id",
                         exif=data.exif_orientation)  # fmt: skip


def build_training(
    cfg: Config,
    train_set: CocoDetection,
    val_set: CocoDetection | None,
    dist: DistInfo,
    model: SSDLite | None = None,
) -> Training:
    """Every object of a training run on this process: model (``model`` when given, e.g. started from other
    weights, else a fresh one; on the device, wrapped in DDP with several processes), criterion,
    post-processor, loaders (the global batch split over the processes), optimiser, warmup + cosine schedule
    per iteration, gradient scaler, EMA, step settings."""
    t, device = cfg.train, dist.device
    if t.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size {t.batch_size} does not split over {dist.world_size} processes")
    if t.freeze_backbone_epochs < 0 or t.backbone_lr_mult < 0:
        raise ConfigError("train.freeze_backbone_epochs and train.backbone_lr_mult must not be negative")
    model = model if model is not None else build_model(cfg.model)
    if t.sync_bn and dist.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion, post = build_criterion(cfg.loss), build_postprocessor(cfg, model.anchors)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, t.seed)
    train_loader = DataLoader(
        train_set,
        t.batch_size // dist.world_size,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.data.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"{len(train_set)} training images do not fill one batch of {t.batch_size} (train.batch_size)"
        )
    optimizer = build_optimizer(model, t.lr, t.momentum, t.weight_decay, t.backbone_lr_mult)
    schedule = warmup_cosine(t.epochs * len(train_loader), t.warmup_iters, t.warmup_factor, t.min_lr_ratio)
    amp = t.amp and device.type == "cuda"
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True) if t.ema else None
    net = model
    if dist.enabled:
        # A frozen backbone has no gradients for a while: DDP must then look for the parameters a step left out.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=t.freeze_backbone_epochs > 0)  # fmt: skip
    return Training(
        model=model,
        net=net,
        criterion=criterion,
        post=post,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        scaler=torch.amp.GradScaler("cuda", enabled=amp),
        ema=ema,
        train_loader=train_loader,
        val_loader=eval_loader(val_set, workers=cfg.data.workers) if val_set is not None else None,
        val_gt=load_coco(val_set.ann_file) if val_set is not None and dist.is_main else None,  # scored on main
        labels=LabelMap(train_set.categories),
        settings=StepSettings(
            device, amp, t.channels_last, t.clip_grad_norm, t.freeze_bn, t.max_bad_steps, t.freeze_backbone_epochs
        ),
        config=config.to_dict(cfg),
        epochs=t.epochs,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
    )
