"""What every runtime of an exported file shares: the file's metadata -> pre-processing, post-processing and
labels. A runtime supplies only ``infer`` (one float32 batch -> the graph's outputs).

Metadata (written by ``detector.deploy.onnx_export.metadata``, all strings): input size, score function,
post-processing settings and categories, so the file alone suffices. Raw graphs (``boxes`` (N, A, 4) float32
xyxy input pixels, ``scores`` (N, A, C) float32) are post-processed here with our ``PostProcessor`` (the same
code as the PyTorch path); NMS graphs (``det_batch``, ``det_boxes``, ``det_scores``, ``det_labels``) already
return detections.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from detector.data.image_io import preprocess
from detector.deploy.torch_runtime import StageTimes
from detector.ssd.detections import LabelMap
from detector.ssd.postprocess import PostProcessor


class ExportedDetector:
    """``detector(frames)`` -> one result dict per (H, W, 3) uint8 RGB frame, exactly like ``Detector``:
    ``boxes`` (D, 4) float32 xyxy in frame pixels, ``scores`` (D,), ``labels`` (D,) int64 1-based,
    ``category_ids`` (D,) and ``names``. ``runtime`` names the engine (``detector.deploy.runtimes``)."""

    runtime = ""

    def __init__(self, path: str | Path, props: dict[str, str], max_batch: int | None) -> None:
        self.path = Path(path)
        self.outputs = props["detector.outputs"]
        self.precision = props.get("detector.precision", "fp32")
        h, w = json.loads(props["detector.input_size"])
        self.input_size = (int(h), int(w))
        settings = json.loads(props["detector.postprocess"])
        self.post = PostProcessor(props["detector.score_fn"], **settings, input_size=self.input_size)
        self.labels = LabelMap(json.loads(props["detector.categories"]))
        self.categories, self.names = self.labels.categories, self.labels.names
        self.max_batch = max_batch  # None: any batch size
        self.times = StageTimes()

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N, 3, H, W) float32 RGB in [0, 1] -> the graph's outputs, in the graph's order."""
        raise NotImplementedError

    def __call__(self, frames: list[np.ndarray]) -> list[dict]:
        if not frames:
            return []
        step = self.max_batch or len(frames)
        results: list[dict] = []
        for start in range(0, len(frames), step):
            results += self._run(frames[start : start + step])
        return results

    def _run(self, frames: list[np.ndarray]) -> list[dict]:
        t0 = time.perf_counter()
        batch = preprocess(frames, self.input_size).numpy()
        t1 = time.perf_counter()
        outputs = self.infer(batch)
        t2 = time.perf_counter()
        if self.outputs == "nms":
            image, boxes, scores, labels = (torch.from_numpy(np.asarray(o)) for o in outputs)
            dets = [{"boxes": boxes[image == i], "scores": scores[image == i], "labels": labels[image == i]}
                    for i in range(len(frames))]  # fmt: skip
        else:
            boxes, scores = torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1])
            dets = [self.post.select_boxes(boxes[i], scores[i]) for i in range(len(frames))]
        results = [
            self.labels.detections(self.post.to_image(d["boxes"], frame.shape[:2]), d["scores"], d["labels"])
            for d, frame in zip(dets, frames)
        ]
        t3 = time.perf_counter()
        self.times.record(t0, t1, t2, t3, len(frames))
        return results
