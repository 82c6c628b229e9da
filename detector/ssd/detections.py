"""Post-processed outputs -> the detections a user reads: numpy arrays with the dataset's category ids and names.

Every inference path (PyTorch eager, ONNX Runtime, OpenVINO, ExecuTorch, COCO evaluation) ends here, so they
all hand out the same ``Detections`` for the same boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Detections:
    """The detections of one image, best first.

    ``boxes`` (D, 4) float32 xyxy in the image's pixels, ``scores`` (D,) float32, ``labels`` (D,) int64 model
    labels 1..C, ``category_ids`` (D,) int64 the dataset's ids, ``names`` (D strings). ``image_size`` (H, W),
    ``source`` (a file name, or "") and ``frame`` (the index in a video, 0 for still images) say where they
    come from; ``to_json`` is the record ``tools/detect.py --save-json`` writes.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    category_ids: np.ndarray
    names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    source: str = ""
    frame: int = 0

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where the boolean mask ``keep`` (D,) is true, in the same order."""
        names = [name for name, kept in zip(self.names, keep.tolist()) if kept]
        return replace(self, boxes=self.boxes[keep], scores=self.scores[keep], labels=self.labels[keep],
                       category_ids=self.category_ids[keep], names=names)  # fmt: skip

    def at(self, source: str, frame: int = 0) -> Detections:
        """The same detections, recorded as those of ``frame`` of ``source``."""
        return replace(self, source=source, frame=frame)

    def to_json(self) -> dict:
        """``{"source", "frame", "width", "height", "detections": [{"bbox": [x1, y1, x2, y2], "score",
        "category_id", "name"}]}``: boxes in image pixels rounded to 0.01, scores to 1e-5."""
        h, w = self.image_size
        detections = [
            {
                "bbox": [round(float(v), 2) for v in box],
                "score": round(float(score), 5),
                "category_id": int(cid),
                "name": name,
            }
            for box, score, cid, name in zip(self.boxes, self.scores, self.category_ids, self.names)
        ]
        return {"source": self.source, "frame": self.frame, "width": w, "height": h, "detections": detections}


class LabelMap:
    """Model labels 1..C <-> the dataset's categories, ``categories[k - 1]`` = {"id", "name"} of label k."""

    def __init__(self, categories: list[dict]) -> None:
        self.categories = categories
        self.ids = np.array([c["id"] for c in categories], dtype=np.int64)
        self.names = [c["name"] for c in categories]

    def detections(
        self,
        boxes: torch.Tensor | np.ndarray,
        scores: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        image_size: tuple[int, int] = (0, 0),
    ) -> Detections:
        """(D, 4) xyxy boxes in pixels of an image of ``image_size`` (H, W), (D,) scores and (D,) labels 1..C ->
        ``Detections`` with the dataset's category ids and names."""
        labels = _numpy(labels).astype(np.int64)
        return Detections(
            boxes=_numpy(boxes).astype(np.float32).reshape(-1, 4),
            scores=_numpy(scores).astype(np.float32),
            labels=labels,
            category_ids=self.ids[labels - 1],
            names=[self.names[i - 1] for i in labels.tolist()],
            image_size=(int(image_size[0]), int(image_size[1])),
        )


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
