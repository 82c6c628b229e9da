"""Where a dataset's files are: the COCO 2017 layout under a root, or explicit paths."""

from __future__ import annotations

from pathlib import Path

from detector.config import DataConfig
from detector.errors import UserError


def resolve(data: DataConfig, split: str) -> tuple[Path, Path]:
    """(annotation JSON, image folder) of ``split`` ("train" or "val"); explicit paths win over data_root."""
    ann, images = (data.train_json, data.train_images) if split == "train" else (data.val_json, data.val_images)
    if not ann and data.data_root:
        ann = str(Path(data.data_root) / "annotations" / f"instances_{split}2017.json")
    if not images and data.data_root:
        images = str(Path(data.data_root) / f"{split}2017")
    if not ann or not images:
        raise UserError(f"no {split} data: give --data-root, or --{split}-json and --{split}-images")
    ann_path, image_dir = Path(ann), Path(images)
    if not ann_path.is_file():
        raise UserError(f"{ann_path}: annotation file not found")
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: image folder not found")
    return ann_path, image_dir
