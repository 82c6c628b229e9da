"""Typed configuration: dataclasses with defaults, complete YAML recipes, ``--set key=value`` overrides.

Only builders and tools read a ``Config``; modules take explicit arguments. Every check of a value is here:
types (with lossless conversions) and enums from the annotations (``Literal``), ranges from ``RANGES``, and
the few rules that tie two keys together; a bad value is a ``ConfigError`` that names the key. ``to_dict``
gives plain Python types, which travel in checkpoints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from detector.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


Backbone = Literal["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mnasnet_a1", "mobilenet_v1"]
AugmentStep = Literal["photometric", "zoom_out", "ssd_crop", "iou_crop", "hflip"]


class _Section:
    """Checks a section's values when it is made (from YAML, a checkpoint or code)."""

    SECTION = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            key, value = f"{self.SECTION}.{f.name}", getattr(self, f.name)
            _check_literal(key, value, hints[f.name])
            rule = RANGES.get(key)
            if rule is not None and not rule[0](value):
                raise ConfigError(f"{key}: expected {rule[1]}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Rules that tie keys of the section together."""


@dataclass
class ModelConfig(_Section):
    SECTION = "model"
    backbone: Backbone = "mobilenet_v3_large"
    width: float = 1.0
    reduced_tail: bool = True  # "†": halve the blocks between C4 and C5 (MobileNetV3 only)
    # anchors: paper (3 on the lowest level, 2034 at 320) | torchvision (6 everywhere)
    layout: Literal["paper", "torchvision"] = "paper"
    num_classes: int = 90  # foreground classes; 0: as many as the training set has
    image_size: tuple[int, int] = (320, 320)  # (H, W) of the model input; [H, W] in YAML
    extra_depths: list[int] = field(default_factory=lambda: [512, 256, 256, 128])
    min_depth: int = 16  # TF's floor for extra-layer depths scaled by the width multiplier
    # symmetric: (k - 1) / 2 | tf_same: TF's SAME, asymmetric at stride 2 (TF weights)
    padding: Literal["symmetric", "tf_same"] = "symmetric"
    # MobileNetV3's squeeze-and-excite gate: hardsigmoid (ReLU6(x + 3) / 6, the paper's) | tf_slim (TF slim's
    # ReLU6(x + 3) * 0.16667, the TF zoo's weights)
    se_gate: Literal["hardsigmoid", "tf_slim"] = "hardsigmoid"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.03
    head_init_std: float = 0.03
    backbone_init_std: float = 0.0  # 0: He (fan-out) as torchvision; > 0: TF's truncated normal (paper: 0.03)
    class_bias_init: float = 0.0

    def check(self) -> None:
        if self.reduced_tail and not self.backbone.startswith("mobilenet_v3"):
            raise ConfigError(f"model.reduced_tail: only MobileNetV3 has a reduced tail, not {self.backbone!r}")
        if self.se_gate != "hardsigmoid" and not self.backbone.startswith("mobilenet_v3"):
            raise ConfigError(f"model.se_gate: only MobileNetV3 has hard-sigmoid gates, not {self.backbone!r}")


@dataclass
class LossConfig(_Section):
    SECTION = "loss"
    kind: Literal["focal", "softmax_hnm"] = "focal"  # focal (paper, sigmoid scores) | softmax_hnm (torchvision)
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    neg_to_pos: int = 3
    iou_threshold: float = 0.5


@dataclass
class PostprocessConfig(_Section):
    SECTION = "postprocess"
    score_thresh: float = 1e-8
    nms_thresh: float = 0.6
    topk_per_class: int = 100
    max_detections: int = 100
    # after_nms: the best topk_per_class survivors of NMS per class (TF, the paper) | before_nms: the best
    # topk_per_class candidates per class enter NMS (torchvision)
    per_class_limit: Literal["after_nms", "before_nms"] = "after_nms"
    # before_nms: boxes clipped to the input, then NMS (torchvision) | after_nms: NMS on the unclipped boxes,
    # then clip, drop boxes of zero area, then the total limit (TF's multiclass_non_max_suppression)
    clip_boxes: Literal["before_nms", "after_nms"] = "before_nms"


@dataclass
class DataConfig(_Section):
    SECTION = "data"
    # Either data_root with the COCO 2017 layout, or the four explicit paths (they win over data_root).
    data_root: str = ""
    train_json: str = ""
    train_images: str = ""
    val_json: str = ""
    val_images: str = ""
    # Augmentation steps in order, from: photometric, zoom_out, ssd_crop (TF), iou_crop (torchvision), hflip.
    augment: list[AugmentStep] = field(default_factory=lambda: ["hflip", "ssd_crop"])
    zoom_out_max: float = 4.0
    # loader processes per training process; auto: the cores this process may use, shared with the other
    # processes of this machine, one left for the training loop, at most 8 (0 on a CPU run of 4 cores or fewer)
    workers: int | Literal["auto"] = 2
    preflight: bool = True  # check every image file before training (missing, empty, unreadable, truncated)
    # contiguous: label k is the k-th category by id | category_id: label k is category id k (TF's and
    # torchvision's COCO models: 90 slots for COCO's 80 categories, Table 6's parameter counts)
    class_slots: Literal["contiguous", "category_id"] = "contiguous"
    exif_orientation: bool = False  # turn images by their EXIF orientation (datasets labelled on rotated views)
    # the resize to the model input: cv2 (bilinear, half-pixel centres, rounded to uint8) | tf_legacy (TF's
    # legacy bilinear, source = destination * in / out, float output: what the TF zoo's models were fed)
    resize: Literal["cv2", "tf_legacy"] = "cv2"


@dataclass
class TrainConfig(_Section):
    SECTION = "train"
    epochs: int = 1
    batch_size: int = 32  # global: split over the processes, so the recipe means the same on 1 or N
    # images per forward pass and process (at most the process's share, batch_size / processes, which it must
    # divide); each optimiser step accumulates share / micro_batch passes. 0: the whole share; auto: the largest
    # that fits the GPU (on the CPU: 0). BatchNorm statistics are per micro-batch (docs/training.md)
    micro_batch: int | Literal["auto"] = 0
    lr: float = 0.4  # for the global batch
    momentum: float = 0.9
    weight_decay: float = 4e-5  # on convolution weights only
    warmup_iters: int = 2000
    warmup_factor: float = 0.13333 / 0.4  # warmup starts at lr * warmup_factor (TF: 0.13333 -> 0.4)
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    clip_grad_norm: float = 0.0  # 0: off
    amp: bool = True  # mixed precision, on CUDA only
    channels_last: bool = True
    ema: bool = False
    ema_decay: float = 0.9998
    sync_bn: bool = False  # CUDA only
    freeze_bn: bool = False  # BatchNorm in inference mode (fine-tuning with small batches)
    init: str = ""  # start from: a name of the weights catalog (imagenet-large, torchvision-coco, ...) or a checkpoint
    freeze_backbone_epochs: int = 0  # backbone frozen (weights and BatchNorm) for the first N epochs
    backbone_lr_mult: float = 1.0  # the backbone's learning rate is train.lr times this
    seed: int = 0
    eval_every: int = 1  # epochs; 0: only at the end
    max_bad_steps: int = 20  # consecutive non-finite losses before training stops
    log_every: int = 20  # iterations between TensorBoard points
    checkpoint_every: int = 0  # iterations between mid-epoch saves of last.pt (0: at epoch ends only)

    def check(self) -> None:
        if self.micro_batch == 1 and not self.freeze_bn:
            # The last feature maps are 1x1: BatchNorm in training mode needs two values per channel.
            raise ConfigError("train.micro_batch 1: BatchNorm needs at least 2 images per forward pass; use 2 or "
                              "more, or train.freeze_bn=true")  # fmt: skip


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _nonnegative(v: float) -> bool:
    return v >= 0


def _fraction(v: float) -> bool:
    return 0 <= v <= 1


def _positive(v: float) -> bool:
    return v > 0


def _at_least_one(v: float) -> bool:
    return v >= 1


# "section.key": (the test a value must pass, what it expects, for the message)
RANGES: dict[str, tuple[Callable[[typing.Any], bool], str]] = {
    "model.width": (_positive, "a width multiplier above 0"),
    "model.num_classes": (_nonnegative, "0 (the training set's classes) or more"),
    "model.image_size": (lambda v: min(v) >= 32, "[H, W] of at least 32 pixels"),
    "model.extra_depths": (lambda v: all(d >= 1 for d in v), "depths of at least 1"),
    "model.min_depth": (_at_least_one, "at least 1"),
    "model.bn_eps": (_positive, "above 0"),
    "model.bn_momentum": (_fraction, "a value in [0, 1]"),
    "model.head_init_std": (_nonnegative, "0 or more"),
    "model.backbone_init_std": (_nonnegative, "0 (He initialisation) or more"),
    "loss.focal_alpha": (_fraction, "a value in [0, 1]"),
    "loss.focal_gamma": (_nonnegative, "0 or more"),
    "loss.neg_to_pos": (_at_least_one, "at least 1"),
    "loss.iou_threshold": (lambda v: 0 < v <= 1, "a value in (0, 1]"),
    "postprocess.score_thresh": (_fraction, "a score in [0, 1]"),
    "postprocess.nms_thresh": (_fraction, "an IoU in [0, 1]"),
    "postprocess.topk_per_class": (_at_least_one, "at least 1"),
    "postprocess.max_detections": (_at_least_one, "at least 1"),
    "data.zoom_out_max": (_at_least_one, "at least 1"),
    "data.workers": (lambda v: v == "auto" or v >= 0, "auto or 0 or more"),
    "train.epochs": (_at_least_one, "at least 1"),
    "train.batch_size": (_at_least_one, "at least 1"),
    "train.micro_batch": (lambda v: v == "auto" or v >= 0, "auto, 0 (batch_size / processes) or more"),
    "train.lr": (_nonnegative, "0 or more"),
    "train.momentum": (_fraction, "a value in [0, 1]"),
    "train.weight_decay": (_nonnegative, "0 or more"),
    "train.warmup_iters": (_nonnegative, "0 or more"),
    "train.warmup_factor": (_fraction, "a value in [0, 1]"),
    "train.min_lr_ratio": (_fraction, "a value in [0, 1]"),
    "train.clip_grad_norm": (_nonnegative, "0 (off) or more"),
    "train.ema_decay": (_fraction, "a value in [0, 1]"),
    "train.freeze_backbone_epochs": (_nonnegative, "0 or more"),
    "train.backbone_lr_mult": (_nonnegative, "0 or more"),
    "train.eval_every": (_nonnegative, "0 (only at the end) or more"),
    "train.max_bad_steps": (_at_least_one, "at least 1"),
    "train.log_every": (_at_least_one, "at least 1"),
    "train.checkpoint_every": (_nonnegative, "0 (at epoch ends only) or more"),
}


def _check_literal(key: str, value: object, hint: object) -> None:
    """A value of a ``Literal`` field (or list of them) must be one of its choices."""
    if typing.get_origin(hint) is list:
        for i, item in enumerate(value):
            _check_literal(f"{key}[{i}]", item, typing.get_args(hint)[0])
    elif typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
        raise ConfigError(f"{key}: unknown {value!r}; expected one of {', '.join(typing.get_args(hint))}")
    elif typing.get_origin(hint) in (typing.Union, types.UnionType) and isinstance(value, str):
        words = [w for a in typing.get_args(hint) if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        if words and value not in words:
            raise ConfigError(f"{key}: unknown {value!r}; expected {_describe(typing.get_args(hint))}")


def _describe(alternatives: tuple) -> str:
    """E.g. ``an integer or 'auto'`` for ``int | Literal["auto"]``."""
    kinds = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names = [
        " or ".join(repr(w) for w in typing.get_args(a)) if typing.get_origin(a) is Literal else kinds[a]
        for a in alternatives
        if a is not type(None)
    ]
    return " or ".join(names)


def _check_type(key: str, value: object, hint: object) -> object:
    """Return ``value`` converted to ``hint`` where that is lossless, else raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        alternatives = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(alternatives) > 1:  # e.g. int | Literal["auto"]: the first that takes the value
            for alternative in alternatives:
                try:
                    return _check_type(key, value, alternative)
                except ConfigError:
                    pass
            raise ConfigError(f"{key}: expected {_describe(tuple(alternatives))}, got {value!r}")
        hint = alternatives[0]
        origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"{key}: expected a list of {len(items)} values, got {value!r}")
        return tuple(_check_type(f"{key}[{i}]", v, item) for i, (v, item) in enumerate(zip(value, items)))
    if origin is Literal:
        hint = type(typing.get_args(hint)[0])
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str) -> object:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(prefix + key, value, hint)
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    """A Config from nested plain data; missing keys take their defaults."""
    return _build(Config, data, "")


def to_dict(cfg: Config) -> dict:
    """Nested plain data (tuples as lists), as YAML files and checkpoints hold it."""
    return dataclasses.asdict(
        cfg, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v for k, v in items}
    )


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars or lists) to nested plain data."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key!r}: cannot parse {raw!r}: {exc}") from None
    return data


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (``yaml.safe_load``), apply overrides, check every key and type."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def dump_yaml(cfg: Config) -> str:
    """The resolved config as a complete YAML recipe."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
