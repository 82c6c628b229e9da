"""COCO evaluation with pycocotools: the 12 standard numbers and per-class AP, exactly as COCOeval computes them.

Detections are COCO results records: {"image_id", "category_id", "bbox": [x, y, w, h], "score"}.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.data.annotations import read_annotation_json

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _valid_box(bbox: object) -> bool:
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)
        and bbox[2] > 0
        and bbox[3] > 0
    )


def to_coco(data: dict) -> COCO:
    """A pycocotools COCO over the usable part of ``data``: records pycocotools cannot index or score
    (annotations with bad boxes, unknown images or categories) dropped, a missing ``area`` taken as the box
    area and a missing ``iscrowd`` as 0. A valid file is used as it is, so scores equal any pycocotools run."""
    images = [i for i in data["images"] if isinstance(i, dict) and "id" in i]
    image_ids = {i["id"] for i in images}
    categories = [c for c in data["categories"] if isinstance(c, dict) and "id" in c]
    cat_ids = {c["id"] for c in categories}
    anns = []
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in image_ids or not _valid_box(ann.get("bbox")):
            continue
        if ann.get("category_id") not in cat_ids:
            continue
        if "area" in ann and "iscrowd" in ann and "id" in ann:
            anns.append(ann)
        else:
            anns.append(
                {
                    "iscrowd": 0,
                    "id": 1_000_000_000 + len(anns),
                    **ann,
                    "area": ann.get("area", ann["bbox"][2] * ann["bbox"][3]),
                }
            )
    coco = COCO()
    coco.dataset = {**data, "images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(path: str | Path) -> COCO:
    """``to_coco(read_annotation_json(path))``."""
    return to_coco(read_annotation_json(path))


def evaluate(gt: COCO | str | Path, detections: list[dict], per_class: bool = True) -> dict:
    """pycocotools bbox evaluation -> {"AP": ..., ..., "ARl": ..., "per_class": {name: AP}, "precision": array}.

    Values are pycocotools' own (-1 where undefined). ``precision`` is COCOeval's
    (T=10 IoUs, R=101 recalls, K classes, A=4 areas, M=3 max-dets) array, for precision-recall plots.
    """
    coco_gt = gt if isinstance(gt, COCO) else load_coco(gt)
    image_ids = sorted(coco_gt.getImgIds())
    if not detections:
        stats = np.full(12, -1.0) if not coco_gt.getAnnIds() else np.zeros(12)
        out = {k: float(v) for k, v in zip(STAT_KEYS, stats)}
        out["per_class"] = {c["name"]: 0.0 for c in coco_gt.loadCats(coco_gt.getCatIds())}
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(STAT_KEYS, ev.stats)}
    if per_class:
        precision = ev.eval["precision"]  # (T, R, K, A, M)
        out["per_class"] = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            out["per_class"][coco_gt.cats[cat_id]["name"]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
        out["precision"] = precision
    return out


def to_coco_results(image_id: int, boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray) -> list[dict]:
    """xyxy boxes (D, 4) in image pixels -> COCO results records with [x, y, w, h] boxes."""
    records = []
    for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), scores.tolist(), category_ids.tolist()):
        records.append(
            {
                "image_id": int(image_id),
                "category_id": int(c),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(s), 5),
            }
        )
    return records
