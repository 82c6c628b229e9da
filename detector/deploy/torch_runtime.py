"""Inference on decoded frames: pre-processing -> model -> post-processing, with per-stage timings.

``Detector`` is what tools use to run a trained checkpoint on images, video frames and evaluation sets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from detector.data.image_io import preprocess
from detector.errors import UserError
from detector.ssd.detections import LabelMap
from detector.ssd.postprocess import PostProcessor
from detector.weights import resolve


@dataclass
class StageTimes:
    """Accumulated milliseconds per stage and the number of frames they cover."""

    preprocess: float = 0.0
    model: float = 0.0
    postprocess: float = 0.0
    frames: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        if hasattr(self, stage) and stage not in ("frames", "extra"):
            setattr(self, stage, getattr(self, stage) + ms)
        else:
            self.extra[stage] = self.extra.get(stage, 0.0) + ms

    def record(self, t0: float, t1: float, t2: float, t3: float, frames: int) -> None:
        """One call's perf_counter() marks: start, after pre-processing, after the model, after post-processing."""
        self.add("preprocess", (t1 - t0) * 1e3)
        self.add("model", (t2 - t1) * 1e3)
        self.add("postprocess", (t3 - t2) * 1e3)
        self.frames += frames

    def per_frame(self) -> dict[str, float]:
        n = max(1, self.frames)
        out = {"preprocess": self.preprocess / n, "model": self.model / n, "postprocess": self.postprocess / n}
        out.update({k: v / n for k, v in self.extra.items()})
        return out


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``; an unavailable device is a UserError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return device


class Detector:
    """A checkpoint ready to run: ``detector(frames)`` -> one result dict per (H, W, 3) uint8 RGB frame.

    Each result has ``boxes`` (D, 4) float32 numpy xyxy in the frame's pixels, ``scores`` (D,),
    ``labels`` (D,) int64 model labels (1-based), ``category_ids`` (D,) the dataset's ids and ``names``.
    """

    runtime = "torch"

    def __init__(self, model, postprocessor: PostProcessor, categories: list[dict], device: str = "cpu",
                 half: bool = False) -> None:  # fmt: skip
        self.device = resolve_device(device)
        if half and self.device.type == "cpu":
            raise UserError("--half needs a GPU (cuda or mps); on the CPU use an int8 ONNX export instead")
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.post = postprocessor
        self.labels = LabelMap(categories)
        self.categories, self.names = categories, self.labels.names
        self.input_size = postprocessor.input_size
        self.times = StageTimes()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", half: bool = False) -> Detector:
        model, post, categories, _ = resolve.load_detector(path)
        return cls(model, post, categories, device, half)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def __call__(self, frames: list[np.ndarray]) -> list[dict]:
        if not frames:
            return []
        t0 = time.perf_counter()
        batch = preprocess(frames, self.input_size).to(self.device, self.dtype, non_blocking=True)
        self._sync()
        t1 = time.perf_counter()
        boxes, logits = self.model(batch)
        self._sync()
        t2 = time.perf_counter()
        dets = self.post(boxes.float(), logits.float(), [f.shape[:2] for f in frames])
        results = [self.labels.detections(d["boxes"], d["scores"], d["labels"]) for d in dets]
        t3 = time.perf_counter()
        self.times.record(t0, t1, t2, t3, len(frames))
        return results
