"""The export pipeline in-process: ONNX files (raw, int8) and TorchScript with their parity reports."""

import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from detector import build
from detector.deploy import pipeline
from detector.deploy.onnx_runtime import OnnxDetector
from detector.deploy.parity import Parity
from detector.deploy.pipeline import OnnxExporter, default_output_path, export_onnx_file, export_torchscript_file
from detector.deploy.torchscript import load_torchscript
from detector.errors import UserError

from .tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, post, categories, cfg) of the tiny checkpoint, loaded as the tools load it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build.load_detector(write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"))
    torch.set_num_threads(previous)


def test_default_output_paths():
    assert default_output_path("runs/best.pt") == default_output_path("runs/best.pt", "onnx")
    assert str(default_output_path("runs/best.pt")) == "runs/best.onnx"
    assert str(default_output_path("runs/best.pt", "onnx", nms=True, int8=True)) == "runs/best.nms.int8.onnx"
    assert str(default_output_path("runs/best.pt", "torchscript")) == "runs/best.torchscript.pt"


def test_raw_onnx_file_with_its_parity_report(tiny, tmp_path):
    lines = []
    out = tmp_path / "sub" / "tiny.onnx"
    report = export_onnx_file(*tiny, out, dynamic_batch=True, source="tiny.pt", say=lines.append)
    assert out.is_file() and report.path == out and report.raw_parity.ok and report.nms_parity is None
    assert lines == [f"ONNX Runtime vs PyTorch (raw outputs): {report.raw_parity.describe()}"]
    assert report.describe().startswith(f"wrote {out} (raw outputs, fp32, batch dynamic, ")
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (props["detector.outputs"], props["detector.precision"], props["detector.source"]) == (
        "raw",
        "fp32",
        "tiny.pt",
    )
    assert json.loads(props["detector.input_size"]) == [64, 64]
    (det,) = OnnxDetector(out, threads=1)([np.zeros((30, 50, 3), np.uint8)])
    assert det["boxes"].shape[1] == 4 and set(det["names"]) <= {"circle", "square", "triangle"}


def test_int8_file_reports_drift_and_accuracy(tiny, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(calib / f"{i}.png")
        cv2.imwrite(str(files[-1]), cv2.resize((rng.random((8, 8, 3)) * 255).astype(np.uint8), (80, 60)))
    ann = tmp_path / "val.json"
    images = [{"id": i + 1, "file_name": f.name, "height": 60, "width": 80} for i, f in enumerate(files)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 5, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0}
            for i in range(3)]  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in ((1, "circle"), (2, "square"), (5, "triangle"))]
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    lines = []
    out = tmp_path / "tiny.int8.onnx"
    report = export_onnx_file(*tiny, out, int8_calibration_files=files, accuracy_set=(ann, calib), say=lines.append)
    assert report.precision == "int8" and set(report.int8_drift) == {"box_max", "box_mean", "score_max", "score_mean"}
    assert lines[1].startswith("int8 vs fp32 raw outputs on 3 calibration images")
    assert lines[2:4] == [f"accuracy on {ann} (3 images):", "  precision       AP    AP50"]
    assert set(report.accuracy) == {"fp32", "int8"} and all(-1 <= r["AP"] <= 1 for r in report.accuracy.values())
    assert OnnxDetector(out).precision == "int8"


def test_a_mismatch_writes_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "raw_parity", lambda *args: Parity(box_diff=0.5))
    out = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match="does not match PyTorch.*nothing written"):
        export_onnx_file(*tiny, out, say=lambda line: None)
    assert not out.exists()


def test_exporter_writes_every_variant_without_checks(tiny):
    with OnnxExporter(*tiny, dynamic_batch=True, source="benchmark", check=False) as exporter:
        fp32, nms = exporter.fp32(), exporter.fp32(nms=True)
        outputs = {p.key: p.value for p in onnx.load(str(nms)).metadata_props}["detector.outputs"]
        assert fp32.is_file() and outputs == "nms" and exporter.report.raw_parity is None
    assert not fp32.exists()  # temporary files go with the exporter


def test_torchscript_file(tiny, tmp_path):
    lines = []
    out = tmp_path / "tiny.torchscript.pt"
    report = export_torchscript_file(*tiny, out, source="tiny.pt", say=lines.append)
    assert report.raw_parity.ok and lines[0].startswith("TorchScript vs PyTorch: max |box diff|")
    assert report.describe() == f"wrote {out} (TorchScript, raw outputs)"
    _, props = load_torchscript(out)
    assert props["detector.source"] == "tiny.pt" and props["detector.outputs"] == "raw"
