"""Human-facing evaluation output: the 12-number summary, the per-class table and a precision-recall plot."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detector.evaluation.coco_eval import STAT_KEYS

LABELS = {
    "AP": "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AP50": "AP @[IoU=0.50 | area=all | maxDets=100]",
    "AP75": "AP @[IoU=0.75 | area=all | maxDets=100]",
    "APs": "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "APm": "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "APl": "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR1": "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "AR10": "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR100": "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "ARs": "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "ARm": "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "ARl": "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
}


def summary_lines(metrics: dict) -> list[str]:
    lines = [f"{LABELS[k]:<52} = {metrics[k]:.3f}" for k in STAT_KEYS]
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(len(n) for n in per_class)
        lines += ["", f"{'class':<{width}}  AP"]
        lines += [f"{name:<{width}}  {ap:.3f}" for name, ap in sorted(per_class.items(), key=lambda kv: -kv[1])]
    return lines


def plot_precision_recall(precision: np.ndarray, path: str | Path, size: tuple[int, int] = (480, 640)) -> Path:
    """Draw COCOeval's precision (T, R, K, A, M) at IoU 0.5 and 0.75 (mean over classes, all areas,
    100 detections) against recall as a PNG with OpenCV."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, top, right, bottom = 60, 30, w - 20, h - 50
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    recall = np.linspace(0, 1, precision.shape[1])
    for t_index, color, name in ((0, (200, 60, 20), "IoU 0.50"), (5, (20, 120, 220), "IoU 0.75")):
        p = precision[t_index, :, :, 0, -1]
        p = np.where(p > -1, p, np.nan)
        mean = np.nan_to_num(np.nanmean(p, axis=1) if np.isfinite(p).any() else np.zeros(len(recall)))
        pts = np.stack([left + recall * (right - left), bottom - mean * (bottom - top)], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        cv2.putText(img, name, (right - 110, top + 25 + 22 * (t_index // 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
    for v in (0.0, 0.5, 1.0):
        cv2.putText(
            img,
            f"{v:.1f}",
            (left + int(v * (right - left)) - 10, bottom + 20),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
        )
        cv2.putText(
            img, f"{v:.1f}", (20, bottom - int(v * (bottom - top)) + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
        )
    cv2.putText(img, "recall", (w // 2 - 20, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "precision", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
    return Path(path)
