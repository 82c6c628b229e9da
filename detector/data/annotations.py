"""COCO-format annotation files: reading the JSON and checking every record into per-image records.

Category ids of the file (any set of integers) map to contiguous labels 1..C in sorted id order, and back
through the returned categories. Images without annotations are kept (they teach background). Crowd
annotations are kept apart (never positives). Boxes are clipped to the image; boxes of zero area and unusable
records are dropped, each problem recorded in a ``DatasetReport`` with its file and annotation id.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.errors import UserError

log = logging.getLogger(__name__)


def read_annotation_json(path: str | Path) -> dict:
    """The raw annotation dict, with a one-line error for unreadable files or a missing top-level list."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read annotations: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a COCO annotation file: the top level is not an object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise UserError(f"{path}: not a COCO annotation file: no {key!r} list")
    if not isinstance(data.get("categories", []), list):
        raise UserError(f"{path}: 'categories' is not a list")
    data.setdefault("categories", [])
    return data


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
    """Every problem found: (kind, where) with ``where`` naming the file and the record."""

    problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, where: str) -> None:
        self.problems.append((kind, where))

    @property
    def counts(self) -> Counter:
        return Counter(kind for kind, _ in self.problems)

    @property
    def examples(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind, where in self.problems:
            out.setdefault(kind, []).append(where)
        return out

    def log(self, name: str) -> None:
        examples = self.examples
        for kind, n in sorted(self.counts.items()):
            log.warning("%s: %d x %s (e.g. %s)", name, n, kind, "; ".join(examples[kind][:3]))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dim(value: object) -> int:
    """A positive integer image dimension from the JSON, or 0 when absent or unusable."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 else 0


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


MAX_ID_SLOTS = 10_000  # id-indexed class slots beyond this would be a mistake, not a dataset


def read_coco_records(
    data: dict, ann_file: str | Path, image_dir: str | Path, id_slots: bool = False
) -> tuple[list[ImageRecord], list[dict], DatasetReport]:
    """Check a raw annotation dict: (records, categories [{"id", "name"}] in label order, report).

    Labels are 1..C over the categories sorted by id; with ``id_slots`` label k is category id k instead
    (TF's and torchvision's COCO models: 90 slots for COCO's 80 categories), and the ids no category uses
    are slots named "N/A"."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    report = DatasetReport()
    cats = []
    for c in data["categories"]:
        if isinstance(c, dict) and _is_int(c.get("id")):
            cats.append(c)
        else:
            report.add("category record without an integer id", f"{ann_file}: {str(c)[:80]}")
    cats = sorted({c["id"]: c for c in cats}.values(), key=lambda c: c["id"])
    categories = [{"id": c["id"], "name": str(c.get("name", c["id"]))} for c in cats]
    if id_slots:
        if categories and not 1 <= categories[0]["id"] <= categories[-1]["id"] <= MAX_ID_SLOTS:
            raise UserError(
                f"{ann_file}: category ids run from {categories[0]['id']} to {categories[-1]['id']}; class slots "
                f"indexed by id (data.class_slots: category_id) need ids in 1..{MAX_ID_SLOTS}"
            )
        named = {c["id"]: c["name"] for c in categories}
        top = categories[-1]["id"] if categories else 0
        categories = [{"id": k, "name": named.get(k, "N/A")} for k in range(1, top + 1)]
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories) if not id_slots or c["id"] in named}
    images: dict[int, dict] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            report.add("image record without an integer id or a file_name", f"{ann_file}: {str(img)[:80]}")
            continue
        if img["id"] in images:
            report.add("duplicate image id (first record kept)", f"{ann_file}: image id {img['id']}")
            continue
        images[img["id"]] = img
    per_image: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in images}
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            report.add("annotation record is not an object", f"{ann_file}: {str(ann)[:80]}")
            continue
        where = f"{ann_file}: annotation id {ann.get('id')}"
        img = images.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None
        if img is None:
            report.add("annotation for an image id not in 'images'", where)
            continue
        if ann.get("category_id") not in label_of and not ann.get("iscrowd"):
            report.add("category id not in 'categories'", where)
            continue
        box, reason = _xyxy(ann.get("bbox"), _dim(img.get("width")) or 10**9, _dim(img.get("height")) or 10**9)
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
                width=_dim(img.get("width")),
                height=_dim(img.get("height")),
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(labels, np.int64),
                crowd=np.array(crowd, np.float32).reshape(-1, 4),
            )
        )
    return records, categories, report
