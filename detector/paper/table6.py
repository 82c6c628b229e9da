"""Table 6 of the paper (SSDLite at 320x320 on COCO): the published figures, the model of each row and its
training recipe (``configs/table6_*_paper.yaml`` are written from ``recipe_yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from detector.config import Config, DataConfig, LossConfig, ModelConfig, PostprocessConfig, TrainConfig, dump_yaml
from detector.errors import UserError

# The TF training recipe of every row, from scratch (docs/paper.md, section 4).
TF_BATCH_SIZE = 512  # 32 replicas
# TF's TPU path gave each of the 32 replicas 16 of the 512 images, and slim's batch_norm took its statistics
# over the replica's images only (no cross-replica BatchNorm on the TF1 SSD path): micro-batches of 16 keep
# that, on any number of GPUs of any size (docs/training.md, "The paper's recipe on one GPU").
TF_REPLICA_BATCH = 16
TF_MOMENTUM = 0.9  # SGD
TF_WEIGHT_DECAY = 4e-5  # L2 on conv weights
TF_LR = 0.4  # cosine decay from here to 0
TF_WARMUP_START_LR = 0.13333  # linear warmup from here to TF_LR ...
TF_WARMUP_STEPS = 2000  # ... over this many steps
TF_STEPS_LARGE = 400_000  # V1, V2, MnasNet and V3 (Large) rows
TF_STEPS_SMALL = 800_000  # the two V3-Small rows train twice as long
TF_AUGMENT = ("hflip", "ssd_crop")  # random horizontal flip, then SSD random crop
# Loss and matcher: sigmoid focal loss, no hard example mining (docs/paper.md, section 4).
FOCAL_ALPHA = 0.75  # on positive entries (0.25 on negative ones)
FOCAL_GAMMA = 2.0
MATCH_IOU = 0.5  # IoU >= 0.5 positive, below negative
# Post-processing: sigmoid scores, per-class NMS (docs/paper.md, section 4).
SCORE_THRESH = 1e-8
NMS_IOU = 0.6
TOPK_PER_CLASS = 100
MAX_DETECTIONS = 100
# Not the paper's: how the step counts become epochs, and this project's run settings.
COCO_TRAIN_IMAGES = 118_287  # COCO 2017 train images: one epoch
DATA_ROOT = "data/coco"
TF_INIT_STD = 0.03  # conv_hyperparams initializer of the paper's TF config
WORKERS = "auto"  # the cores of each process, shared (detector.training.capacity.auto_workers)
EVAL_EVERY = 50  # epochs


@dataclass(frozen=True)
class Row:
    name: str  # the paper's row name, exactly
    backbone: str
    width: float
    reduced_tail: bool
    paper_map: float
    paper_latency_ms: float  # Pixel 1, one large core, TFLite
    paper_params_m: float
    paper_madds_b: float
    tf_steps: int = TF_STEPS_LARGE  # training length of the TF recipe (docs/paper.md, section 4)

    @property
    def epochs(self) -> int:
        """``tf_steps`` at ``TF_BATCH_SIZE`` in COCO epochs, rounded (400k steps: 1731, 800k: 3463)."""
        return round(self.tf_steps * TF_BATCH_SIZE / COCO_TRAIN_IMAGES)

    def model_config(self) -> ModelConfig:
        """The paper layout at 320x320 with 90 COCO classes (91 class slots)."""
        return ModelConfig(
            backbone=self.backbone,
            width=self.width,
            reduced_tail=self.reduced_tail,
            layout="paper",
            num_classes=90,
            image_size=(320, 320),
            backbone_init_std=TF_INIT_STD,  # TF's truncated normal for the feature extractor (docs/paper.md, 4)
        )


ROWS = (
    Row("V1", "mobilenet_v1", 1.0, False, 22.2, 228, 5.1, 1.3),
    Row("V2", "mobilenet_v2", 1.0, False, 22.1, 162, 4.3, 0.80),
    Row("MnasNet", "mnasnet_a1", 1.0, False, 23.0, 174, 4.88, 0.84),
    Row("V3", "mobilenet_v3_large", 1.0, False, 22.0, 137, 4.97, 0.62),
    Row("V3†", "mobilenet_v3_large", 1.0, True, 22.0, 119, 3.22, 0.51),
    Row("V2 0.35", "mobilenet_v2", 0.35, False, 13.7, 66, 0.93, 0.16),
    Row("V2 0.5", "mobilenet_v2", 0.5, False, 16.6, 79, 1.54, 0.27),
    Row("MnasNet 0.35", "mnasnet_a1", 0.35, False, 15.6, 68, 1.02, 0.18),
    Row("MnasNet 0.5", "mnasnet_a1", 0.5, False, 18.5, 85, 1.68, 0.29),
    Row("V3-Small", "mobilenet_v3_small", 1.0, False, 16.0, 52, 2.49, 0.21, tf_steps=TF_STEPS_SMALL),
    Row("V3-Small†", "mobilenet_v3_small", 1.0, True, 16.1, 43, 1.77, 0.16, tf_steps=TF_STEPS_SMALL),
)
REFERENCE_ROW = "V3†"


def row_named(name: str) -> Row:
    for row in ROWS:
        if row.name == name:
            return row
    raise KeyError(f"no Table 6 row named {name!r}; rows: {', '.join(r.name for r in ROWS)}")


def row_for_model(backbone: str, width: float, reduced_tail: bool) -> Row | None:
    """The row whose model this is, or None."""
    for row in ROWS:
        if (row.backbone, row.reduced_tail) == (backbone, reduced_tail) and abs(row.width - width) < 1e-9:
            return row
    return None


def map_cell(metrics: dict, path: str, row: str | None = None) -> tuple[str, float, str]:
    """A metrics.json of tools/eval_coco.py (``metrics``, read from ``path``) -> (row name, mAP in percent, the
    split it was measured on) for the row named ``row``, or else the row its model config names.

    TF-trained weights (TF's padding) scored on another split than TF's COCO 2014 minival are refused: the
    paper's cells are measured there, and about 80 % of val2017 was in their training data."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("AP"), (int, float)):
        raise UserError(f"{path}: expected a metrics.json object with a numeric 'AP'")
    model = metrics.get("model") or {}
    if row is None:
        found = row_for_model(model.get("backbone", ""), float(model.get("width", 1.0)),
                              bool(model.get("reduced_tail", False)))  # fmt: skip
        if found is None:
            raise UserError(f"{path}: its model config matches no Table 6 row; pass ROW={path}")
        row = found.name
    try:
        row_named(row)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    split = str(metrics.get("split") or "unknown split")
    if model.get("padding") == "tf_same" and split == "minival2014 (partial)":
        raise UserError(f"{path}: TF-trained weights scored on part of COCO 2014 minival (--allow-partial); "
                        f"Table 6's cells are all 8,059 images")  # fmt: skip
    if model.get("padding") == "tf_same" and split != "minival2014":
        raise UserError(
            f"{path}: TF-trained weights scored on {split}; Table 6 and the TF zoo measured them on COCO 2014 "
            f"minival, and most of val2017 was in their training data: run tools/eval_coco.py --split minival2014"
        )
    return row, 100.0 * float(metrics["AP"]), split


def paper_recipe(row: Row) -> Config:
    """The complete training recipe of ``row``: its model with the paper's TF recipe."""
    return Config(
        model=row.model_config(),
        loss=LossConfig(kind="focal", focal_alpha=FOCAL_ALPHA, focal_gamma=FOCAL_GAMMA, iou_threshold=MATCH_IOU),
        postprocess=PostprocessConfig(
            score_thresh=SCORE_THRESH,
            nms_thresh=NMS_IOU,
            topk_per_class=TOPK_PER_CLASS,
            max_detections=MAX_DETECTIONS,
            per_class_limit="after_nms",
            clip_boxes="after_nms",  # TF's multiclass_non_max_suppression
        ),
        data=DataConfig(data_root=DATA_ROOT, augment=list(TF_AUGMENT), workers=WORKERS, class_slots="category_id"),
        train=TrainConfig(
            epochs=row.epochs,
            batch_size=TF_BATCH_SIZE,
            micro_batch=TF_REPLICA_BATCH,
            lr=TF_LR,
            momentum=TF_MOMENTUM,
            weight_decay=TF_WEIGHT_DECAY,
            warmup_iters=TF_WARMUP_STEPS,
            warmup_factor=TF_WARMUP_START_LR / TF_LR,
            min_lr_ratio=0.0,  # cosine decay to 0
            eval_every=EVAL_EVERY,
        ),
    )


def recipe_file_name(row: Row) -> str:
    """E.g. ``table6_v3_large_reduced_paper.yaml``, ``table6_mnasnet_a1_0.35_paper.yaml``."""
    stem = row.backbone.removeprefix("mobilenet_")
    if row.width != 1.0:
        stem += f"_{row.width:g}"
    if row.reduced_tail:
        stem += "_reduced"
    return f"table6_{stem}_paper.yaml"


def recipe_yaml(row: Row) -> str:
    """The text of ``configs/<recipe_file_name(row)>``: a header comment, then the complete recipe."""
    header = (
        f"# Table 6 row {row.name}: SSDLite {row.name} at 320x320, the paper's TF recipe.\n"
        f"# TF: {row.tf_steps // 1000}k steps at batch {TF_BATCH_SIZE} (32 replicas) = {row.epochs} COCO epochs; "
        f"SGD {TF_MOMENTUM}, cosine from {TF_LR}, warmup {TF_WARMUP_STEPS} steps from {TF_WARMUP_START_LR}; "
        f"paper mAP {row.paper_map:.1f}.\n"
        f"# BatchNorm over {TF_REPLICA_BATCH} images as on each TF replica: train.micro_batch {TF_REPLICA_BATCH}, the "
        f"gradient of all {TF_BATCH_SIZE} per step, on any GPU count and size.\n"
        "# Complete recipe: every key is here; override with --set section.key=value.\n"
        "# Written by `python tools/table6.py --write-recipes configs` from detector/paper/table6.py: edit that.\n"
    )
    return header + dump_yaml(paper_recipe(row))
