"""The runtimes behind one detector interface: OpenVINO (f32, bf16, its own int8 IR) against ONNX Runtime fp32
on the same frames, the runtime table's errors, and --runtime auto's measured, cached choice."""

import json

import cv2
import numpy as np
import pytest

from detector import build
from detector.app.frame_detector import open_detector
from detector.data.synthetic import synthetic_frames
from detector.deploy import runtime_choice, runtimes
from detector.deploy.onnx_runtime import OnnxDetector
from detector.deploy.pipeline import export_onnx_file
from detector.errors import UserError

from .tiny_checkpoint import write_tiny_checkpoint

openvino_runtime = pytest.importorskip("detector.deploy.openvino_runtime")
pytest.importorskip("openvino")

BOX_ATOL, SCORE_ATOL = 0.01, 1e-4  # fp32 runtimes: as tools/export.py's parity check
BF16_BOX_FRACTION, BF16_SCORE_ATOL = 0.01, 0.03  # bf16: 8 mantissa bits; boxes as a fraction of the input side


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtimes")
    ckpt = write_tiny_checkpoint(folder / "tiny.pt")
    model, post, categories, cfg = build.load_detector(ckpt)
    onnx_file = folder / "tiny.onnx"
    export_onnx_file(model, post, categories, cfg, onnx_file, say=lambda _: None)
    xml = folder / "tiny.xml"
    openvino_runtime.export_ir_file(model, post, categories, cfg, xml, say=lambda _: None)
    return {"ckpt": ckpt, "onnx": onnx_file, "xml": xml, "folder": folder}


def raw(detector, frames):
    from detector.data.image_io import preprocess

    return [detector.infer(preprocess([f], detector.input_size).numpy()) for f in frames]


@pytest.mark.parametrize("source", ["onnx", "xml"])
def test_openvino_f32_equals_onnxruntime_fp32(files, source):
    frames = synthetic_frames(4, 96, 128)
    reference = OnnxDetector(files["onnx"], threads=1)
    detector = openvino_runtime.OpenVinoDetector(files[source], "f32", threads=1)
    assert detector.names == reference.names and detector.input_size == reference.input_size
    for (boxes, scores), (ref_boxes, ref_scores) in zip(raw(detector, frames), raw(reference, frames)):
        assert np.abs(boxes - ref_boxes).max() < BOX_ATOL and np.abs(scores - ref_scores).max() < SCORE_ATOL
    for det, ref in zip(detector(frames), reference(frames)):
        assert len(det["boxes"]) == len(ref["boxes"]) and list(det["names"]) == list(ref["names"])
        assert np.abs(det["boxes"] - ref["boxes"]).max(initial=0) < BOX_ATOL


def test_openvino_bf16_within_its_stated_tolerance(files):
    if not runtimes.installed("openvino-bf16"):
        pytest.skip("this CPU has no bf16 kernels in OpenVINO")
    frames = synthetic_frames(4, 96, 128, seed=3)
    reference = OnnxDetector(files["onnx"], threads=1)
    detector = openvino_runtime.OpenVinoDetector(files["xml"], "bf16", threads=1)
    side = max(detector.input_size)
    for (boxes, scores), (ref_boxes, ref_scores) in zip(raw(detector, frames), raw(reference, frames)):
        assert np.abs(boxes - ref_boxes).max() < BF16_BOX_FRACTION * side
        assert np.abs(scores - ref_scores).max() < BF16_SCORE_ATOL
        assert np.abs(scores - ref_scores).max() > 0, "bf16 arithmetic differs somewhere from fp32"


def test_openvino_int8_ir_keeps_the_metadata_and_reports_drift(files, tmp_path):
    calib = []
    for i, frame in enumerate(synthetic_frames(3, 64, 64, seed=5)):
        calib.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(calib[-1]), frame)
    lines = []
    model, post, categories, cfg = build.load_detector(files["ckpt"])
    out = tmp_path / "tiny.int8.xml"
    report = openvino_runtime.export_ir_file(model, post, categories, cfg, out, int8_calibration_files=calib,
                                             say=lines.append)  # fmt: skip
    assert report.precision == "int8" and out.with_suffix(".bin").is_file()
    assert any(line.startswith("int8 vs fp32 raw outputs on 3 calibration images") for line in lines)
    detector = open_detector(out)  # .xml opens in OpenVINO by default
    assert (
        detector.runtime == "openvino"
        and detector.precision == "int8"
        and detector.names == ["circle", "square", "triangle"]
    )
    assert len(detector(synthetic_frames(1, 64, 64))) == 1


def test_the_table_refuses_with_one_line(files, monkeypatch):
    with pytest.raises(UserError, match=r"--runtime openvino does not run .*tiny.pt; runtimes for it: torch"):
        open_detector(files["ckpt"], runtime="openvino")
    with pytest.raises(
        UserError, match=r"--runtime torch does not run .*tiny.onnx; runtimes for it: onnxruntime, openvino"
    ):
        open_detector(files["onnx"], runtime="torch")
    real = runtimes.importlib.util.find_spec
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name: None if name == "openvino" else real(name))
    with pytest.raises(UserError, match=r"^--runtime openvino is not installed: pip install '\.\[openvino\]'$"):
        open_detector(files["onnx"], runtime="openvino")


def test_auto_with_only_onnxruntime_picks_it_and_caches_per_file(files, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime_choice, "installed", lambda name: name == "onnxruntime")
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(files["onnx"].read_bytes())
    measured = []
    original = runtime_choice._measure
    monkeypatch.setattr(runtime_choice, "_measure", lambda c: measured.append(sorted(c)) or original(c))
    detector = open_detector(onnx_file, runtime="auto", threads=1)
    assert isinstance(detector, OnnxDetector) and measured == [["onnxruntime"]]
    cache = json.loads((tmp_path / "cache" / "runtime_choice.json").read_text())
    assert [v["runtime"] for v in cache.values()] == ["onnxruntime"]
    open_detector(onnx_file, runtime="auto", threads=1)
    assert len(measured) == 1, "the second run uses the cached choice"
    model, post, categories, cfg = build.load_detector(files["ckpt"])
    export_onnx_file(model, post, categories, cfg, onnx_file, source="changed", say=lambda _: None)
    open_detector(onnx_file, runtime="auto", threads=1)
    assert len(measured) == 2, "a changed model file is measured again"


def test_auto_on_a_checkpoint_lets_the_exported_runtimes_compete(files, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    measured = []
    original = runtime_choice._measure
    monkeypatch.setattr(runtime_choice, "_measure", lambda c: measured.append(sorted(c)) or original(c))
    detector = open_detector(files["ckpt"], runtime="auto", threads=1)
    expected = {"torch", "onnxruntime", "openvino"} | (
        {"openvino-bf16"} if runtimes.installed("openvino-bf16") else set()
    )
    assert set(measured[0]) == expected and detector.runtime in expected
    assert len(list((tmp_path / "cache" / "exports").glob("*.onnx"))) == 1


@pytest.mark.parametrize("runtime", ["onnxruntime-int8", "openvino-int8"])
def test_table6_latency_on_other_runtimes(runtime):
    """tools/table6.py --latency --runtime: the row's model exported and timed in that runtime."""
    from detector.config import ModelConfig
    from detector.paper.runtime_latency import model_latency_ms

    ms = model_latency_ms(ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=3), runtime, 2)
    assert 0 < ms < 1000
