"""What every exported file carries and what every runner of one shares.

Graphs (N is the batch, fixed at 1 or dynamic; (H, W) the model input size, fixed) take ``images``
(N, 3, H, W) float32 RGB in [0, 1], already resized, and return either

- raw outputs: ``boxes`` (N, A, 4) float32 xyxy in input pixels, decoded (and clipped, unless the
  post-processing clips after NMS as TF does: ``clip_boxes``), and ``scores``
  (N, A, C) float32 foreground class scores (sigmoid or softmax as trained); the runner post-processes them
  with our ``PostProcessor`` (the same code as the PyTorch path); or
- NMS outputs (ONNX only): ``det_batch`` (D,) int64 image index in the batch, ``det_boxes`` (D, 4) float32
  xyxy input pixels, ``det_scores`` (D,) float32, ``det_labels`` (D,) int64 1..C, image by image, best first.

The metadata (``metadata``: input size and resize, score function, post-processing settings, categories, the recipe;
all strings, JSON where structured) travels inside each file, so the file alone suffices to run it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from detector.config import Config, to_dict
from detector.errors import UserError
from detector.inference.runner import Runner
from detector.ssd.detections import Detections
from detector.ssd.postprocess import PostProcessor

FORMAT = "detector-onnx/1"  # the metadata's format, in every kind of exported file
RAW_OUTPUTS = ("boxes", "scores")
NMS_OUTPUTS = ("det_batch", "det_boxes", "det_scores", "det_labels")


def metadata(cfg: Config, post: PostProcessor, categories: list[dict], outputs: str, precision: str,
             source: str) -> dict[str, str]:  # fmt: skip
    """The metadata of an exported file: ``outputs`` "raw" or "nms", ``precision`` "fp32" or "int8"."""
    return {
        "detector.format": FORMAT,
        "detector.outputs": outputs,
        "detector.precision": precision,
        "detector.input_size": json.dumps(list(post.input_size)),
        "detector.resize": cfg.data.resize,
        "detector.score_fn": post.score_fn,
        "detector.postprocess": json.dumps(
            {
                "score_thresh": post.score_thresh,
                "nms_thresh": post.nms_thresh,
                "topk_per_class": post.topk_per_class,
                "max_detections": post.max_detections,
                "per_class_limit": post.per_class_limit,
                "clip_boxes": post.clip_boxes,
            }
        ),
        "detector.categories": json.dumps(categories),
        "detector.config": json.dumps(to_dict(cfg)),
        "detector.source": source,
    }


def check_format(props: dict[str, str], path: str | Path) -> dict[str, str]:
    """``props`` when they are our metadata, else a UserError naming ``path``."""
    if props.get("detector.format") != FORMAT:
        raise UserError(f"{path}: not exported by tools/export.py (no {FORMAT!r} metadata)")
    return props


class ExportedRunner(Runner):
    """An exported file of ours (see ``Runner`` for the call): its metadata gives the pre- and post-processing
    and the labels; a runtime supplies ``infer`` (one (N, 3, H, W) float32 batch -> the graph's outputs as
    numpy arrays, in the graph's order)."""

    def __init__(self, path: str | Path, props: dict[str, str], max_batch: int | None) -> None:
        self.path = Path(path)
        self.outputs = props["detector.outputs"]
        self.precision = props.get("detector.precision", "fp32")
        h, w = json.loads(props["detector.input_size"])
        settings = json.loads(props["detector.postprocess"])
        resize = props.get("detector.resize", "cv2")  # files from before the setting: cv2
        super().__init__(json.loads(props["detector.categories"]), (h, w), max_batch, resize)
        self.post = PostProcessor(props["detector.score_fn"], **settings, input_size=self.input_size)

    def decode(self, outputs: list[np.ndarray], sizes: list[tuple[int, int]],
               min_score: float = 0.0) -> list[Detections]:  # fmt: skip
        if self.outputs == "nms":  # the graph ran NMS at the export's threshold: min_score filters its output
            image, boxes, scores, labels = (torch.from_numpy(np.asarray(o)) for o in outputs)
            mine = [(image == i) & (scores >= min_score) for i in range(len(sizes))]
            dets = [{"boxes": boxes[m], "scores": scores[m], "labels": labels[m]} for m in mine]
        else:
            boxes, scores = torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1])
            dets = [self.post.select_boxes(boxes[i], scores[i], min_score) for i in range(len(sizes))]
        return [
            self.labels.detections(self.post.to_image(d["boxes"], size), d["scores"], d["labels"], size)
            for d, size in zip(dets, sizes)
        ]
