"""Post-processed outputs -> detections a user reads: numpy arrays with the dataset's category ids and names.

Every inference path (PyTorch eager, ONNX Runtime, COCO evaluation) ends here, so they all hand out the same
result for the same boxes.
"""

from __future__ import annotations

import numpy as np
import torch


class LabelMap:
    """Model labels 1..C <-> the dataset's categories, ``categories[k - 1]`` = {"id", "name"} of label k."""

    def __init__(self, categories: list[dict]) -> None:
        self.categories = categories
        self.ids = np.array([c["id"] for c in categories], dtype=np.int64)
        self.names = [c["name"] for c in categories]

    def detections(
        self, boxes: torch.Tensor | np.ndarray, scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> dict:
        """(D, 4) xyxy boxes, (D,) scores and (D,) labels 1..C -> ``boxes`` (D, 4) float32 numpy, ``scores`` (D,)
        float32, ``labels`` (D,) int64, ``category_ids`` (D,) int64 the dataset's ids, ``names`` (D strings)."""
        labels = _numpy(labels).astype(np.int64)
        return {
            "boxes": _numpy(boxes).astype(np.float32).reshape(-1, 4),
            "scores": _numpy(scores).astype(np.float32),
            "labels": labels,
            "category_ids": self.ids[labels - 1],
            "names": [self.names[i - 1] for i in labels.tolist()],
        }


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
