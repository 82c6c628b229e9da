"""Choosing and loading the inference backend, and the per-frame selection of what is kept (score, classes).

``open_detector(weights, runtime=...)`` gives a ``Detector`` (a checkpoint, BatchNorm folded, channels-last on
the CPU) or a detector of an exported file in ONNX Runtime or OpenVINO (``detector.deploy.runtimes``); all take
lists of (H, W, 3) uint8 RGB frames and return one dict per frame: ``boxes`` (D, 4) float32 xyxy in frame
pixels, ``scores`` (D,) float32, ``labels`` (D,) int64 1..C, ``category_ids`` (D,) int64 the dataset's ids
and ``names`` (D strings).
``FrameDetector`` wraps one of them for a single frame and keeps only detections with a score of at least
``conf`` and, when classes are named, of those classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detector.deploy.runtime_choice import choose
from detector.deploy.runtimes import default_runtime, open_runtime
from detector.deploy.torch_runtime import StageTimes
from detector.errors import UserError


def open_detector(weights: str | Path, device: str = "cpu", half: bool = False, threads: int | None = None,
                  runtime: str | None = None):  # fmt: skip
    """A detector for ``weights`` (a checkpoint, a name of the weights catalog, an ``.onnx`` file, an OpenVINO
    ``.xml`` or an ExecuTorch ``.pte``) on ``runtime`` (``detector.deploy.runtimes``; ``auto`` measures the
    installed ones and keeps the fastest; None: torch for checkpoints, onnxruntime for .onnx, openvino for .xml,
    executorch for .pte). All have the same call.

    ``threads`` sets PyTorch's CPU threads and the runtime's; ``half`` is float16, checkpoints on a GPU only.
    """
    if threads:
        torch.set_num_threads(threads)
    if runtime == "auto":
        if device != "cpu":
            raise UserError("--runtime auto measures the CPU runtimes; with --device other than cpu, name one")
        runtime, weights = choose(weights, threads)
    elif runtime is None:
        runtime = default_runtime(weights)
    return open_runtime(runtime, weights, device, half, threads)


def class_filter(names: list[str], wanted: list[str] | None) -> np.ndarray | None:
    """Boolean mask over labels 0..C (label k at index k) of the classes kept; None keeps all.

    A name the model does not have is a UserError that lists the model's names.
    """
    if not wanted:
        return None
    unknown = [n for n in wanted if n not in names]
    if unknown:
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        raise UserError(f"--classes: unknown {', '.join(map(repr, unknown))}; this model has: {shown}")
    return np.array([False] + [n in wanted for n in names])


def select(det: dict, conf: float, keep_classes: np.ndarray | None) -> dict:
    """The detections of ``det`` (a result dict as above) with score >= ``conf`` and a label kept by
    ``keep_classes`` (a ``class_filter`` mask, or None for all); every field filtered alike."""
    keep = det["scores"] >= conf
    if keep_classes is not None:
        keep &= keep_classes[det["labels"]]
    return {k: (v[keep] if isinstance(v, np.ndarray) else [x for x, m in zip(v, keep) if m]) for k, v in det.items()}


class FrameDetector:
    """``frame_detector(image)`` -> the selected detections of one (H, W, 3) uint8 RGB frame.

    ``detector`` is a ``Detector`` or ``OnnxDetector`` (anything with ``names``, ``times`` and the list call);
    ``classes`` names the classes kept (None: all), checked against the model's names at construction.
    """

    def __init__(self, detector, conf: float = 0.3, classes: list[str] | None = None) -> None:
        self.detector = detector
        self.conf = conf
        self.keep_classes = class_filter(detector.names, classes)

    @property
    def times(self) -> StageTimes:
        """The backend's accumulated stage timings (pre-processing, model, post-processing, and extras)."""
        return self.detector.times

    def __call__(self, image: np.ndarray) -> dict:
        return select(self.detector([image])[0], self.conf, self.keep_classes)
