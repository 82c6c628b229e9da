"""The one export pipeline in-process: ONNX files (raw, int8) and TorchScript with their checks and reports."""

import copy
import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from detector.build import LoadedModel, build_postprocessor
from detector.deploy import pipeline
from detector.deploy.onnx_format import OnnxRunner
from detector.deploy.parity import Parity
from detector.deploy.pipeline import FORMATS, ExportOptions, check_options, default_output_path, export
from detector.deploy.torchscript_format import TorchScriptRunner
from detector.errors import UserError
from detector.inference.runner import TorchRunner
from detector.weights.resolve import load_model

from .tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny checkpoint, loaded as the tools load it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"))
    torch.set_num_threads(previous)


def test_default_output_paths():
    assert default_output_path("runs/best.pt") == default_output_path("runs/best.pt", "onnx")
    assert str(default_output_path("runs/best.pt")) == "runs/best.onnx"
    assert str(default_output_path("runs/best.pt", "onnx", nms=True, int8=True)) == "runs/best.nms.int8.onnx"
    assert str(default_output_path("runs/best.pt", "torchscript")) == "runs/best.torchscript.pt"
    assert str(default_output_path("runs/best.pt", "openvino", int8=True)) == "runs/best.int8.xml"
    assert str(default_output_path("runs/best.pt", "executorch")) == "runs/best.pte"


def test_what_a_format_cannot_write_is_refused_before_any_work():
    assert [name for name, f in FORMATS.items() if f.nms] == ["onnx"]
    with pytest.raises(UserError, match="--nms applies to --format onnx"):
        check_options("openvino", nms=True)
    with pytest.raises(UserError, match="--int8 applies to --format onnx, openvino, executorch"):
        check_options("torchscript", int8=True)
    with pytest.raises(UserError, match="executorch files take batch 1"):
        check_options("executorch", dynamic_batch=True)
    check_options("torchscript", dynamic_batch=True)  # always dynamic


def test_raw_onnx_file_with_its_parity_report(tiny, tmp_path):
    lines = []
    out = tmp_path / "sub" / "tiny.onnx"
    report = export(tiny, out, ExportOptions(dynamic_batch=True, source="tiny.pt"), say=lines.append)
    assert out.is_file() and report.path == out and report.raw_parity.ok and report.nms_parity is None
    assert lines == [f"ONNX Runtime vs PyTorch (raw outputs): {report.raw_parity.describe()}"]
    assert report.describe().startswith(f"wrote {out} (ONNX Runtime, raw outputs, fp32, batch dynamic, ")
    assert [p.name for p in out.parent.iterdir()] == ["tiny.onnx"]  # moved into place, no leftovers
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (props["detector.outputs"], props["detector.precision"]) == ("raw", "fp32")
    assert props["detector.source"] == "tiny.pt" and json.loads(props["detector.input_size"]) == [64, 64]
    (det,) = OnnxRunner(out, threads=1)([np.zeros((30, 50, 3), np.uint8)])
    assert det.boxes.shape[1] == 4 and set(det.names) <= {"circle", "square", "triangle"}
    assert det.image_size == (30, 50)


def _labelled_set(folder) -> tuple:
    """Three images with a box each, as a COCO annotation file and its image folder; the files."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(folder / f"{i}.png")
        cv2.imwrite(str(files[-1]), cv2.resize((rng.random((8, 8, 3)) * 255).astype(np.uint8), (80, 60)))
    ann = folder.parent / "val.json"
    images = [{"id": i + 1, "file_name": f.name, "height": 60, "width": 80} for i, f in enumerate(files)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 5, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0}
            for i in range(3)]  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in ((1, "circle"), (2, "square"), (5, "triangle"))]
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return ann, folder, files


def test_int8_nms_file_reports_drift_and_accuracy(tiny, tmp_path):
    ann, images, files = _labelled_set(tmp_path / "calib")
    lines = []
    out = tmp_path / "tiny.nms.int8.onnx"
    options = ExportOptions(nms=True, calibration=files, accuracy_set=(ann, images))
    report = export(tiny, out, options, say=lines.append)
    assert report.precision == "int8" and set(report.int8_drift) == {"box_max", "box_mean", "score_max", "score_mean"}
    assert report.nms_parity.ok and report.int8_nms_parity is not None and report.outputs == "nms"
    assert lines[2].startswith("int8 vs fp32 raw outputs on 3 calibration images")
    assert lines[4:6] == [f"accuracy on {ann} (3 images):", "  precision       AP    AP50"]
    assert set(report.accuracy) == {"fp32", "int8"} and all(-1 <= r["AP"] <= 1 for r in report.accuracy.values())
    runner = OnnxRunner(out)
    assert (runner.precision, runner.outputs) == ("int8", "nms")


def test_a_failed_check_writes_nothing(tiny, tmp_path, monkeypatch):
    out = tmp_path / "bad.onnx"
    monkeypatch.setattr(pipeline, "raw_parity", lambda *args: Parity(box_diff=0.5))
    with pytest.raises(UserError, match="does not match PyTorch.*nothing written"):
        export(tiny, out, ExportOptions(), say=lambda line: None)
    assert not out.exists()
    report = export(tiny, out, ExportOptions(check=False), say=lambda line: None)  # random weights: no check
    assert out.is_file() and report.raw_parity is None
    out.unlink()
    ann, images, _ = _labelled_set(tmp_path / "val")

    def accuracy(runner, *args, **kwargs) -> dict:  # int8 10 AP points below fp32
        return {"AP": 0.4 if runner.precision == "int8" else 0.5, "AP50": 0.5, "images": 3}

    monkeypatch.setattr(pipeline, "coco_accuracy", accuracy)
    options = ExportOptions(calibration=[images / "0.png"], accuracy_set=(ann, images), check=False)
    with pytest.raises(UserError, match="int8 loses 10.00 AP points against fp32.*nothing written"):
        export(tiny, out, options, say=lambda line: None)
    assert not out.exists()


def test_torchscript_file(tiny, tmp_path):
    lines = []
    out = tmp_path / "tiny.torchscript.pt"
    report = export(tiny, out, ExportOptions(format="torchscript", source="tiny.pt"), say=lines.append)
    assert report.raw_parity.ok and lines[0].startswith("TorchScript vs PyTorch (raw outputs): max |box diff|")
    assert report.dynamic_batch and report.describe().startswith(f"wrote {out} (TorchScript, raw outputs, fp32")
    runner = TorchScriptRunner(out)
    assert runner.path == out and runner.outputs == "raw" and runner.max_batch is None
    (det,) = runner([np.zeros((30, 50, 3), np.uint8)])
    assert det.image_size == (30, 50)


def test_nms_file_clips_after_nms_as_tf_does(tiny, tmp_path):
    """TF's order (NMS on unclipped boxes, then clip and drop zero-area boxes) in the ONNX NMS graph, the raw
    graph and its runner: all equal PyTorch's post-processing, and the raw boxes do cross the border."""
    cfg = copy.deepcopy(tiny.config)
    cfg.postprocess.clip_boxes = "after_nms"
    tf_order = LoadedModel(tiny.model, build_postprocessor(cfg, tiny.model), tiny.categories, cfg, "tiny.pt")
    raw, with_nms = tmp_path / "tf.onnx", tmp_path / "tf.nms.onnx"
    export(tf_order, raw, ExportOptions(), say=lambda line: None)
    report = export(tf_order, with_nms, ExportOptions(nms=True), say=lambda line: None)
    assert report.nms_parity.ok and report.nms_parity.detections > 0
    frames = [(np.random.default_rng(i).random((48, 80, 3)) * 255).astype(np.uint8) for i in range(3)]
    runner = OnnxRunner(raw, threads=1)
    assert json.loads({p.key: p.value for p in onnx.load(str(raw)).metadata_props}["detector.postprocess"])[
        "clip_boxes"] == "after_nms"  # fmt: skip
    boxes, _ = runner.infer(runner.prepare(frames[:1]))
    assert boxes.min() < 0 or boxes.max() > 64, "unclipped raw boxes must cross the border for this to mean much"
    reference = TorchRunner(tiny.model, tf_order.post, tiny.categories)(frames)
    for got in (runner(frames), OnnxRunner(with_nms, threads=1)(frames)):
        for g, r in zip(got, reference):
            assert g.boxes.min() >= 0 and (g.boxes[:, 2] <= 80).all() and (g.boxes[:, 3] <= 48).all()
            np.testing.assert_allclose(np.sort(g.scores), np.sort(r.scores), atol=1e-5)
