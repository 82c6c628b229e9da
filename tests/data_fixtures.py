"""Small generated datasets for the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

from detector.data.synthetic import generate


def tiny_dataset(root: Path, train: int = 8, val: int = 4) -> Path:
    return generate(root, num_train=train, num_val=val, seed=1, size_range=(64, 96))


TINY_TRAIN = [
    "model.backbone=mobilenet_v3_small",
    "model.image_size=[64, 64]",
    "model.num_classes=5",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.warmup_iters=2",
    "train.epochs=2",
    "train.channels_last=false",
    "data.workers=0",
    "data.augment=[hflip, ssd_crop]",
    "postprocess.score_thresh=0.01",
]
