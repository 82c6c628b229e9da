"""A COCO-format detection dataset: annotation checks, category mapping, decoding and transforms.

Category ids of the file (any set of integers) map to contiguous labels 1..C in sorted id order, and back
through ``categories``. Images without annotations are kept (they teach background). Crowd annotations are
kept apart (never positives). Boxes are clipped to the image; boxes of zero area and unusable records are
dropped, each problem counted and logged with its file and annotation id.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detector.data.image_io import read_image
from detector.data.transforms import apply_transform
from detector.errors import UserError
from detector.evaluation import load_coco

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (M, 4) float32 xyxy pixels, clipped
    labels: np.ndarray  # (M,) int64 in 1..C
    crowd: np.ndarray  # (G, 4) float32 xyxy pixels


@dataclass
class DatasetReport:
    """What the annotation check found: problem kind -> count, and the first examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(where)

    def log(self, name: str) -> None:
        for kind, n in sorted(self.counts.items()):
            log.warning("%s: %d x %s (e.g. %s)", name, n, kind, "; ".join(self.examples[kind]))


def _xyxy(bbox: object, width: int, height: int) -> tuple[np.ndarray | None, str]:
    """COCO [x, y, w, h] -> clipped xyxy, or (None, reason)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None, "bbox is not a list of 4 numbers"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None, "bbox has non-numeric values"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, "bbox has NaN or infinite values"
    if w <= 0 or h <= 0:
        return None, "bbox has zero or negative width/height"
    box = np.array([max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)], np.float32)
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        return None, "bbox lies outside the image"
    return box, ""


def read_coco_records(
    coco: COCO, ann_file: str | Path, image_dir: str | Path
) -> tuple[list[ImageRecord], list[dict], DatasetReport]:
    """Check a loaded COCO annotation file: (records, categories [{"id", "name"}] in label order, report)."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    report = DatasetReport()
    cats = sorted(coco.dataset["categories"], key=lambda c: c["id"])
    categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in cats]
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    images: dict[int, dict] = {}
    for img in coco.dataset["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            report.add("image record without id or file_name", f"{ann_file}: {str(img)[:80]}")
            continue
        images[img["id"]] = img
    per_image: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in images}
    for ann in coco.dataset["annotations"]:
        where = f"{ann_file}: annotation id {ann.get('id')}"
        img = images.get(ann.get("image_id"))
        if img is None:
            report.add("annotation for an image id not in 'images'", where)
            continue
        if ann.get("category_id") not in label_of and not ann.get("iscrowd"):
            report.add("category id not in 'categories'", where)
            continue
        box, reason = _xyxy(ann.get("bbox"), int(img.get("width", 0) or 1e9), int(img.get("height", 0) or 1e9))
        if box is None:
            report.add(reason, where)
            continue
        boxes, labels, crowd = per_image[img["id"]]
        if ann.get("iscrowd"):
            crowd.append(box)
        else:
            boxes.append(box)
            labels.append(label_of[ann["category_id"]])
    records = []
    for image_id, img in images.items():
        boxes, labels, crowd = per_image[image_id]
        records.append(
            ImageRecord(
                image_id=int(image_id),
                path=image_dir / str(img["file_name"]),
                width=int(img.get("width", 0) or 0),
                height=int(img.get("height", 0) or 0),
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(labels, np.int64),
                crowd=np.array(crowd, np.float32).reshape(-1, 4),
            )
        )
    return records, categories, report


class CocoDetection(Dataset):
    """Item i -> (image (H, W, 3) uint8 at the model size, target dict of tensors).

    target: ``boxes`` (M, 4) float32 xyxy input pixels, ``labels`` (M,) int64 1..C, ``crowd_boxes`` (G, 4),
    ``image_id`` int, ``orig_size`` (H, W) of the source image. An image that cannot be read is replaced by
    the next readable one (logged once), so that a bad file does not stop a week-long run.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, transform, seed: int = 0) -> None:
        self.coco = load_coco(ann_file)
        self.records, self.categories, self.report = read_coco_records(self.coco, ann_file, image_dir)
        self.report.log(str(ann_file))
        if not self.records:
            raise UserError(f"{ann_file}: no usable images")
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self._bad: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index) only: resumable and worker-independent."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, ImageRecord]:
        rec = self.records[index]
        return read_image(rec.path), rec

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict]:
        for offset in range(len(self.records)):
            i = (index + offset) % len(self.records)
            if i in self._bad:
                continue
            try:
                image, rec = self.load(i)
                break
            except UserError as exc:
                self._bad.add(i)
                log.warning("skipping unreadable image: %s", exc)
        else:
            raise UserError("no readable image in the dataset")
        boxes = np.concatenate([rec.boxes, rec.crowd])
        labels = np.concatenate([rec.labels, -np.ones(len(rec.crowd), np.int64)])
        # Clip again against the decoded size: the JSON's width/height may be wrong.
        h, w = image.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        seed = (self.seed * 1_000_003 + self.epoch * 100_003 + index) % 2**32
        image, boxes, labels = apply_transform(self.transform, image, boxes[ok], labels[ok], seed)
        crowd = labels < 0
        return image, {
            "boxes": torch.from_numpy(boxes[~crowd]),
            "labels": torch.from_numpy(labels[~crowd]),
            "crowd_boxes": torch.from_numpy(boxes[crowd]),
            "image_id": rec.image_id,
            "orig_size": (h, w),
        }


def collate(batch: list[tuple[np.ndarray, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """-> images (N, H, W, 3) uint8 (converted to float on the device), list of targets."""
    return torch.from_numpy(np.stack([b[0] for b in batch])), [b[1] for b in batch]
