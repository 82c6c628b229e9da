"""The XNNPACK route: a .pte of ours in ExecuTorch gives ONNX Runtime fp32's detections (fp32 within the export
parity tolerances); int8 reports its drift. Runs where '.[executorch]' is installed (it is not in '.[dev]')."""

import numpy as np
import pytest

from detector import build
from detector.app.frame_detector import open_detector
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy.onnx_runtime import OnnxDetector
from detector.deploy.pipeline import export_onnx_file

from .tiny_checkpoint import write_tiny_checkpoint

pytest.importorskip("executorch.runtime")
executorch_runtime = pytest.importorskip("detector.deploy.executorch_runtime")


def test_pte_equals_onnxruntime_fp32_and_int8_reports_drift(tmp_path):
    import cv2

    model, post, categories, cfg = build.load_detector(write_tiny_checkpoint(tmp_path / "tiny.pt"))
    export_onnx_file(model, post, categories, cfg, tmp_path / "tiny.onnx", say=lambda _: None)
    executorch_runtime.export_pte_file(model, post, categories, cfg, tmp_path / "tiny.pte", say=lambda _: None)
    reference, detector = OnnxDetector(tmp_path / "tiny.onnx", threads=1), open_detector(tmp_path / "tiny.pte")
    assert detector.runtime == "executorch" and detector.names == reference.names
    for frame in synthetic_frames(3, 96, 128):
        x = preprocess([frame], detector.input_size).numpy()
        (boxes, scores), (ref_boxes, ref_scores) = detector.infer(x), reference.infer(x)
        assert np.abs(boxes - ref_boxes).max() < 0.01 and np.abs(scores - ref_scores).max() < 1e-4
    calib = []
    for i, frame in enumerate(synthetic_frames(3, 64, 64, seed=5)):
        calib.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(calib[-1]), frame)
    lines = []
    report = executorch_runtime.export_pte_file(model, post, categories, cfg, tmp_path / "tiny.int8.pte",
                                                int8_calibration_files=calib, say=lines.append)  # fmt: skip
    assert report.precision == "int8" and any(line.startswith("int8 vs fp32 raw outputs on 3") for line in lines)
    assert open_detector(tmp_path / "tiny.int8.pte").precision == "int8"
