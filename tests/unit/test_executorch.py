"""The XNNPACK route: a .pte of ours in ExecuTorch gives ONNX Runtime fp32's detections (fp32 within the export
parity tolerances); int8 reports its drift. Runs where '.[executorch]' is installed (it is not in '.[dev]')."""

import cv2
import numpy as np
import pytest

from detector.app import api
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy.onnx_format import OnnxRunner
from detector.deploy.pipeline import ExportOptions, export
from detector.weights.resolve import load_model

from .tiny_checkpoint import write_tiny_checkpoint

pytest.importorskip("executorch.runtime")


def test_pte_equals_onnxruntime_fp32_and_int8_reports_drift(tmp_path):
    loaded = load_model(write_tiny_checkpoint(tmp_path / "tiny.pt"))
    export(loaded, tmp_path / "tiny.onnx", ExportOptions(), say=lambda _: None)
    export(loaded, tmp_path / "tiny.pte", ExportOptions(format="executorch"), say=lambda _: None)
    reference, runner = OnnxRunner(tmp_path / "tiny.onnx", threads=1), api.load(tmp_path / "tiny.pte").runner
    assert runner.runtime == "executorch" and runner.names == reference.names
    for frame in synthetic_frames(3, 96, 128):
        x = preprocess([frame], runner.input_size).numpy()
        (boxes, scores), (ref_boxes, ref_scores) = runner.infer(x), reference.infer(x)
        assert np.abs(boxes - ref_boxes).max() < 0.01 and np.abs(scores - ref_scores).max() < 1e-4
    calib = []
    for i, frame in enumerate(synthetic_frames(3, 64, 64, seed=5)):
        calib.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(calib[-1]), frame)
    lines = []
    options = ExportOptions(format="executorch", calibration=calib)
    report = export(loaded, tmp_path / "tiny.int8.pte", options, say=lines.append)
    assert report.precision == "int8" and any(line.startswith("int8 vs fp32 raw outputs on 3") for line in lines)
    assert api.load(tmp_path / "tiny.int8.pte").runner.precision == "int8"
