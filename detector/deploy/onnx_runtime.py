"""Running our exported ONNX files with ONNX Runtime, with the same interface and results as ``Detector``.

The file alone suffices: input size, score function, post-processing settings and categories come from its
``metadata_props`` (written by ``detector.deploy.onnx_export``). Raw graphs are post-processed here with our
``PostProcessor`` (the same code as the PyTorch path); NMS graphs already return detections.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from detector.data.image_io import preprocess
from detector.deploy.onnx_export import FORMAT
from detector.deploy.torch_runtime import StageTimes
from detector.errors import UserError
from detector.ssd.detections import LabelMap
from detector.ssd.postprocess import PostProcessor


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights into memory twice)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise UserError(f"{path}: not a readable ONNX file: {str(exc)[:200]}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("detector.format") != FORMAT:
        raise UserError(f"{path}: not exported by tools/export.py (no {FORMAT!r} metadata)")
    return props


def session(path: str | Path, threads: int | None = None, device: str = "cpu") -> ort.InferenceSession:
    """An ONNX Runtime session; ``threads`` None uses all cores; ``device`` cpu, cuda or cuda:N."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    if device == "cpu":
        providers: list = ["CPUExecutionProvider"]
    elif device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    else:
        raise UserError(f"--device {device}: ONNX files run on cpu or cuda[:N]")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"{path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0][:200]}") from None


class OnnxDetector:
    """``detector(frames)`` -> one result dict per (H, W, 3) uint8 RGB frame, exactly like ``Detector``:
    ``boxes`` (D, 4) float32 xyxy in frame pixels, ``scores`` (D,), ``labels`` (D,) int64 1-based,
    ``category_ids`` (D,) and ``names``."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        self.path = Path(path)
        props = read_metadata(self.path)
        self.outputs = props["detector.outputs"]
        self.precision = props.get("detector.precision", "fp32")
        h, w = json.loads(props["detector.input_size"])
        self.input_size = (int(h), int(w))
        settings = json.loads(props["detector.postprocess"])
        self.post = PostProcessor(props["detector.score_fn"], **settings, input_size=self.input_size)
        self.labels = LabelMap(json.loads(props["detector.categories"]))
        self.categories, self.names = self.labels.categories, self.labels.names
        self.session = session(self.path, threads, device)
        batch = self.session.get_inputs()[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) else None  # None: any batch size
        self.times = StageTimes()

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
        outputs = self.session.run(None, {"images": batch})
        t2 = time.perf_counter()
        if self.outputs == "nms":
            image, boxes, scores, labels = (torch.from_numpy(o) for o in outputs)
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
