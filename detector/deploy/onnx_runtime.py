"""Running our exported ONNX files with ONNX Runtime, with the same interface and results as ``Detector``.

The file alone suffices: input size, score function, post-processing settings and categories come from its
``metadata_props`` (written by ``detector.deploy.onnx_export``); ``ExportedDetector`` does the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from detector.deploy.exported_detector import ExportedDetector
from detector.deploy.onnx_export import FORMAT
from detector.errors import UserError


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


class OnnxDetector(ExportedDetector):
    """An ONNX file of ours in ONNX Runtime (see ``ExportedDetector`` for the call and its results)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        props = read_metadata(path)
        self.session = session(path, threads, device)
        batch = self.session.get_inputs()[0].shape[0]
        super().__init__(path, props, batch if isinstance(batch, int) else None)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": batch})
