"""COCO AP of a ready-to-run detector on a labelled image set, and the table comparing several of them.

The detector is any callable taking a list of (H, W, 3) uint8 RGB frames and returning one ``Detections``
per frame (a runner of ``detector.inference.runner``). Every detection it returns is scored (use the model's
own low score threshold).
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from detector.data.image_io import read_image
from detector.evaluation.coco_eval import evaluate, load_coco, to_coco_results


def coco_accuracy(detector, ann_path: str | Path, image_dir: str | Path, desc: str = "eval") -> dict[str, float]:
    """{"AP", "AP50", "images"} of ``detector`` on the COCO-format set ``ann_path`` / ``image_dir``."""
    coco = load_coco(ann_path)
    records: list[dict] = []
    for info in tqdm(coco.loadImgs(sorted(coco.getImgIds())), desc=desc, unit="img"):
        det = detector([read_image(Path(image_dir) / info["file_name"])])[0]
        records += to_coco_results(info["id"], det.boxes, det.scores, det.category_ids)
    stats = evaluate(coco, records, per_class=False)
    return {"AP": stats["AP"], "AP50": stats["AP50"], "images": len(coco.getImgIds())}


def accuracy_lines(rows: dict[str, dict[str, float]], ann_path: str | Path) -> list[str]:
    """The AP / AP50 table of ``rows`` ({"fp32": coco_accuracy(...), "int8": ...}), one line per row."""
    images = next(iter(rows.values()))["images"] if rows else 0
    lines = [f"accuracy on {ann_path} ({images} images):", f"  {'precision':10s} {'AP':>7s} {'AP50':>7s}"]
    lines += [f"  {name:10s} {row['AP']:7.4f} {row['AP50']:7.4f}" for name, row in rows.items()]
    return lines
