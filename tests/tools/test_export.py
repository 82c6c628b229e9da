"""BatchNorm folding, ONNX / TorchScript export parity, the NMS graph, int8 export and ONNX in tools/detect.py."""

import json
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
import torch

from detector.deploy.fuse import count_batchnorms, fuse_for_inference
from detector.deploy.graphs import RawOutputs
from detector.deploy.onnx_format import OnnxRunner, session
from detector.deploy.parity import Parity, nms_parity, sample_inputs
from detector.deploy.pipeline import ExportOptions
from detector.deploy.pipeline import export as export_in_process
from detector.deploy.runtimes import open_runner
from detector.deploy.torchscript_format import TorchScriptRunner
from detector.weights.resolve import load_model

from ..conftest import run_tool, tool_in_process
from .test_detect import ENV, SIZES, detect, read_lines, smooth_image
from .test_detect import _one_thread as _one_thread  # noqa: F401 - fixtures
from .test_detect import mixed_folder as mixed_folder  # noqa: F401
from .test_detect import weights as weights  # noqa: F401


@pytest.fixture(scope="module")
def raw_onnx(weights):
    """The checkpoint's raw graph (batch 1) written in-process, as tools/export.py writes it."""
    options = ExportOptions(source=weights.name)
    return export_in_process(load_model(weights), weights.with_name("raw.onnx"), options, say=lambda _: None).path


def export(*args: str):
    """tools/export.py in this process; the int8 export runs in a new one."""
    return tool_in_process("tools/export.py", *args)


def frames() -> list[np.ndarray]:
    return [cv2.cvtColor(smooth_image(h, w, i), cv2.COLOR_BGR2RGB) for i, (h, w) in enumerate([(240, 320), (57, 900)])]


def assert_same_detections(a, b, box_atol: float = 0.01, score_atol: float = 1e-4) -> None:
    """Same detections (``boxes``, ``scores``, ``category_ids``) up to order among (near-)equal scores: every one
    of ``a`` has a twin in ``b``."""
    assert len(a.scores) == len(b.scores) > 0
    np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=score_atol, rtol=0)
    for box, score, cid in zip(a.boxes, a.scores, a.category_ids):
        twin = (np.abs(b.boxes - box).max(1) <= box_atol) & (np.abs(b.scores - score) <= score_atol)
        assert (twin & (b.category_ids == cid)).any(), (box, score, cid)


def test_fused_model_equals_the_unfused_one(weights):
    model = load_model(weights).model
    fused = fuse_for_inference(model, channels_last=True)
    assert count_batchnorms(model) > 0 and count_batchnorms(fused) == 0
    x = torch.rand(2, 3, 128, 128)
    with torch.inference_mode():
        for got, want in zip(fused(x), model(x)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_onnx_detector_matches_the_checkpoint(weights, raw_onnx):
    props = {p.key: p.value for p in onnx.load(str(raw_onnx)).metadata_props}
    assert json.loads(props["detector.input_size"]) == [128, 128] and props["detector.score_fn"] == "sigmoid"
    assert json.loads(props["detector.categories"])[2] == {"id": 5, "name": "triangle"}
    reference, runner = open_runner("torch", weights), OnnxRunner(raw_onnx, threads=1)
    for got, want in zip(runner(frames()), reference(frames())):
        assert_same_detections(got, want)
        assert got.names == [n for n in got.names if n in ("circle", "square", "triangle")]


def test_nms_in_the_graph_matches_our_postprocessing(weights, tmp_path):
    out = tmp_path / "nms.onnx"
    result = export("--weights", str(weights), "--nms", "--dynamic-batch", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "ONNX Runtime vs PyTorch (raw outputs): max |box diff|" in result.stdout
    # two batches (of 2 and of 1 image) with 100 detections each, all with a twin in PyTorch's
    assert "ONNX Runtime NMS graph vs our post-processing" in result.stdout
    assert "detections 300 vs 300 (300 with the same class and box)" in result.stdout
    runner = OnnxRunner(out, threads=1)
    assert runner.outputs == "nms" and runner.max_batch is None  # dynamic batch
    batch = frames()
    for got, want in zip(runner(batch), open_runner("torch", weights)(batch)):  # both frames in one run
        assert_same_detections(got, want)


def test_detect_with_onnx_weights_writes_the_checkpoints_json(weights, raw_onnx, mixed_folder, tmp_path):  # noqa: F811
    lines = tmp_path / "onnx.jsonl"
    result = detect(
        str(mixed_folder), "--weights", str(raw_onnx), "--runtime", "onnxruntime", "--save-json", str(lines)
    )
    assert result.returncode == 0, result.stderr
    reference = open_runner("torch", weights)
    records = read_lines(lines)
    assert len(records) == len(SIZES)
    for record in records:
        image = cv2.cvtColor(cv2.imread(record["source"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert (record["height"], record["width"]) == image.shape[:2]
        want = reference([image])[0]
        got = SimpleNamespace(
            boxes=np.array([d["bbox"] for d in record["detections"]]).reshape(-1, 4),
            scores=np.array([d["score"] for d in record["detections"]]),
            category_ids=np.array([d["category_id"] for d in record["detections"]]),
        )
        want = want.select(want.scores >= 0.3)
        assert_same_detections(got, want, box_atol=0.01, score_atol=2e-5)  # JSON rounds to 0.01 px, 1e-5


def test_int8_export_runs_and_reports_accuracy(weights, tmp_path):
    calib, val = tmp_path / "calib", tmp_path / "val"
    calib.mkdir(), val.mkdir()
    images, annotations = [], []
    for i in range(4):
        cv2.imwrite(str(calib / f"{i}.jpg"), smooth_image(120, 160, 10 + i))
        cv2.imwrite(str(val / f"v{i}.jpg"), smooth_image(120, 160, 20 + i))
        images.append({"id": i + 1, "file_name": f"v{i}.jpg", "height": 120, "width": 160})
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": 5, "bbox": [10, 20, 60, 50], "area": 3000, "iscrowd": 0}
        )
    ann = tmp_path / "val.json"
    ann.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [
                    {"id": c["id"], "name": c["name"]}
                    for c in [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "triangle"}]
                ],
            }
        )
    )
    out = tmp_path / "small.int8.onnx"
    result = run_tool(
        "tools/export.py",
        "--weights",
        str(weights),
        "--int8",
        "--calib",
        str(calib),
        "--val-json",
        str(ann),
        "--val-images",
        str(val),
        "--out",
        str(out),
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "int8 vs fp32 raw outputs" in result.stdout
    rows = {
        line.split()[0]: line.split()[1:]
        for line in result.stdout.splitlines()
        if line.startswith("  fp32") or line.startswith("  int8")
    }
    assert set(rows) == {"fp32", "int8"} and all(-1 <= float(v) <= 1 for r in rows.values() for v in r)
    runner = OnnxRunner(out, threads=1)
    assert runner.precision == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    (det,) = runner(frames()[:1])
    assert len(det.scores) == 100 and set(det.names) <= {"circle", "square", "triangle"}


def test_torchscript_export_matches(weights, tmp_path):
    path = tmp_path / "small.torchscript.pt"
    result = export("--weights", str(weights), "--format", "torchscript", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"wrote {path} (TorchScript, raw outputs, fp32, batch dynamic")
    runner, loaded = TorchScriptRunner(path), load_model(weights)
    assert runner.post.score_fn == "sigmoid" and runner.names == ["circle", "square", "triangle"]
    x = sample_inputs((128, 128), 2, dynamic=True)[0]  # a batch of two
    with torch.inference_mode():
        for got, want in zip(runner.infer(x), RawOutputs(loaded.model, loaded.post)(torch.from_numpy(x))):
            torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-3, rtol=1e-4)


def test_parity_verdicts(weights, raw_onnx):
    assert Parity(box_diff=1e-3, score_diff=1e-6).ok
    assert not Parity(box_diff=0.5).ok and not Parity(score_diff=1e-3).ok
    assert not Parity(detections=99, reference_detections=100, matched=99).ok
    assert Parity(detections=100, reference_detections=100, matched=100).ok
    # a raw graph passed off as NMS outputs of the wrong model cannot match
    loaded = load_model(weights)
    post, run = loaded.post, session(raw_onnx, threads=1)
    reference = RawOutputs(loaded.model, post).eval()

    def shifted(x):  # the reference with every box moved by one pixel
        with torch.inference_mode():
            boxes, scores = reference(torch.from_numpy(x))
        return boxes + 1.0, scores

    def as_nms(x):
        boxes, scores = run.run(None, {"images": x})
        det = post.select_boxes(torch.from_numpy(boxes[0]), torch.from_numpy(scores[0]))
        return [
            np.zeros(len(det["scores"]), np.int64),
            det["boxes"].numpy(),
            det["scores"].numpy(),
            det["labels"].numpy(),
        ]

    parity = nms_parity(as_nms, shifted, post, sample_inputs((128, 128), 1))
    assert parity.detections == parity.reference_detections and parity.matched == 0 and not parity.ok
