"""OpenCV's DNN module on our raw ONNX file: the runtime many hobby projects use for this very model, as a peer
in ``tools/benchmark.py inference`` (path ``OPENCV_DNN``, target ``fastest_e2e_over_opencv_dnn_e2e``).

Run the way OpenCV users run a detector: ``cv2.dnn.blobFromImages`` resizes the frames (bilinear) and scales them
to [0, 1] into one NCHW float32 blob, ``cv2.dnn.readNetFromONNX`` runs the graph; its raw outputs, boxes
(N, A, 4) xyxy input pixels and scores (N, A, C), then go through our post-processing like every other
runtime's (OpenCV has no SSD post-processing for an ONNX graph; ``cv2.dnn.NMSBoxesBatched`` has no per-class
or total limits). Not in the package: a benchmark contestant, not one of our runtimes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detector.deploy.exported import ExportedRunner
from detector.deploy.onnx_format import read_metadata


class OpenCvDnnRunner(ExportedRunner):
    """Our raw ONNX file (fp32) in OpenCV's DNN module on ``threads`` CPU threads (OpenCV's setting is
    process-wide: ``cv2.setNumThreads``)."""

    runtime = "opencv-dnn"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        props = read_metadata(path)
        super().__init__(path, props, None)
        if self.outputs != "raw":
            raise ValueError(f"{path}: OpenCV DNN runs our raw graphs, not an NMS graph")
        self.net = cv2.dnn.readNetFromONNX(str(path))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        if threads:
            cv2.setNumThreads(threads)

    def prepare(self, frames: list[np.ndarray]) -> np.ndarray:
        """RGB frames -> (N, 3, H, W) float32 in [0, 1], OpenCV's way (its bilinear resize, then the scale)."""
        h, w = self.input_size
        return cv2.dnn.blobFromImages(frames, 1.0 / 255.0, (w, h), swapRB=False, crop=False)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        self.net.setInput(batch)
        return list(self.net.forward(["boxes", "scores"]))
