"""The runtimes behind one runner interface: OpenVINO (f32, bf16, its own int8 IR) against ONNX Runtime fp32
on the same frames, the runtime table's errors, --runtime auto's measured, cached choice, and Table 6's latency
column on other runtimes."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from benchmarks import table6_latency
from detector import checkpoint
from detector.app import api
from detector.config import ModelConfig
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy import runtime_choice, runtimes
from detector.deploy.onnx_format import OnnxRunner
from detector.deploy.openvino_format import OpenVinoRunner
from detector.deploy.pipeline import ExportOptions, export
from detector.errors import UserError
from detector.weights.resolve import load_model

from ..conftest import ROOT
from .tiny_checkpoint import write_tiny_checkpoint

pytest.importorskip("openvino")

BOX_ATOL, SCORE_ATOL = 0.01, 1e-4  # fp32 runtimes: as tools/export.py's parity check
BF16_BOX_FRACTION, BF16_SCORE_ATOL = 0.01, 0.03  # bf16: 8 mantissa bits; boxes as a fraction of the input side


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtimes")
    ckpt = write_tiny_checkpoint(folder / "tiny.pt")
    loaded = load_model(ckpt)
    onnx_file = export(loaded, folder / "tiny.onnx", ExportOptions(), say=lambda _: None).path
    xml = export(loaded, folder / "tiny.xml", ExportOptions(format="openvino"), say=lambda _: None).path
    return {"ckpt": ckpt, "onnx": onnx_file, "xml": xml, "folder": folder}


def raw(runner, frames):
    return [runner.infer(preprocess([f], runner.input_size).numpy()) for f in frames]


@pytest.mark.parametrize("source", ["onnx", "xml"])
def test_openvino_f32_equals_onnxruntime_fp32(files, source):
    frames = synthetic_frames(4, 96, 128)
    reference = OnnxRunner(files["onnx"], threads=1)
    runner = OpenVinoRunner(files[source], "f32", threads=1)
    assert runner.names == reference.names and runner.input_size == reference.input_size
    for (boxes, scores), (ref_boxes, ref_scores) in zip(raw(runner, frames), raw(reference, frames)):
        assert np.abs(boxes - ref_boxes).max() < BOX_ATOL and np.abs(scores - ref_scores).max() < SCORE_ATOL
    for det, ref in zip(runner(frames), reference(frames)):
        assert len(det) == len(ref) and det.names == ref.names
        assert np.abs(det.boxes - ref.boxes).max(initial=0) < BOX_ATOL


def test_openvino_bf16_within_its_stated_tolerance(files):
    if not runtimes.installed("openvino-bf16"):
        pytest.skip("this CPU has no bf16 kernels in OpenVINO")
    frames = synthetic_frames(4, 96, 128, seed=3)
    reference = OnnxRunner(files["onnx"], threads=1)
    runner = OpenVinoRunner(files["xml"], "bf16", threads=1)
    side = max(runner.input_size)
    for (boxes, scores), (ref_boxes, ref_scores) in zip(raw(runner, frames), raw(reference, frames)):
        assert np.abs(boxes - ref_boxes).max() < BF16_BOX_FRACTION * side
        assert np.abs(scores - ref_scores).max() < BF16_SCORE_ATOL
        assert np.abs(scores - ref_scores).max() > 0, "bf16 arithmetic differs somewhere from fp32"


def test_openvino_int8_ir_keeps_the_metadata_and_reports_drift(files, tmp_path):
    calib = []
    for i, frame in enumerate(synthetic_frames(3, 64, 64, seed=5)):
        calib.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(calib[-1]), frame)
    lines = []
    out = tmp_path / "tiny.int8.xml"
    options = ExportOptions(format="openvino", calibration=calib)
    report = export(load_model(files["ckpt"]), out, options, say=lines.append)
    assert report.precision == "int8" and out.with_suffix(".bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".png")) == [
        "tiny.int8.bin",
        "tiny.int8.xml",
    ]
    assert any(line.startswith("int8 vs fp32 raw outputs on 3 calibration images") for line in lines)
    detector = api.load(out)  # .xml opens in OpenVINO by default (f32 or bf16, whichever measured faster)
    assert detector.runtime.startswith("openvino") and detector.runner.precision == "int8"
    assert detector.names == ["circle", "square", "triangle"]
    assert detector(synthetic_frames(1, 64, 64)[0]).image_size == (64, 64)


def test_runners_dropped_in_creation_order_leave_signal_delivery_working(files):
    """Every openvino.Core installs an alternate signal stack and unmaps it when destroyed; Cores destroyed
    first-in first-out left the thread on an unmapped stack, and the next signal crashed the process (a test
    worker, on a child's exit). The runners share one Core: checked in a new process, which a crash would kill."""
    code = f"""
import gc, os, signal
from detector.deploy.openvino_format import OpenVinoRunner
first, second = OpenVinoRunner({str(files["onnx"])!r}), OpenVinoRunner({str(files["xml"])!r}, "f32", 1)
del first; gc.collect(); del second; gc.collect()
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
print("handled", len(got))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "handled 1", (done.returncode, done.stderr[-2000:])


def test_the_table_refuses_with_one_line(files, monkeypatch):
    with pytest.raises(UserError, match=r"--runtime openvino does not run .*tiny.pt; runtimes for it: torch"):
        api.load(files["ckpt"], runtime="openvino")
    with pytest.raises(
        UserError, match=r"--runtime torch does not run .*tiny.onnx; runtimes for it: onnxruntime, openvino"
    ):
        api.load(files["onnx"], runtime="torch")
    real = runtimes.importlib.util.find_spec
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name: None if name == "openvino" else real(name))
    with pytest.raises(UserError, match=r"^--runtime openvino is not installed: pip install openvino$"):
        api.load(files["onnx"], runtime="openvino")


def test_auto_measures_caches_per_file_and_measures_a_changed_file_again(files, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime_choice, "installed", lambda name: name in ("onnxruntime", "openvino"))
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(files["onnx"].read_bytes())
    measured = []
    original = runtime_choice._measure
    monkeypatch.setattr(runtime_choice, "_measure", lambda c: measured.append(sorted(c)) or original(c))
    detector = api.load(onnx_file, threads=1)  # the default on the CPU
    assert measured == [["onnxruntime", "openvino", "openvino, pre-processing in the graph"]]
    assert detector.runtime in ("onnxruntime", "openvino")
    cache = json.loads((tmp_path / "cache" / "runtime_choice.json").read_text())
    assert [v["runtime"] for v in cache.values()] == [detector.runtime]
    api.load(onnx_file, runtime="auto", threads=1)
    assert len(measured) == 1, "the second run uses the cached choice"
    export(load_model(files["ckpt"]), onnx_file, ExportOptions(source="changed"), say=lambda _: None)
    api.load(onnx_file, runtime="auto", threads=1)
    assert len(measured) == 2, "a changed model file is measured again"


def test_one_candidate_is_not_measured_and_a_missing_runtime_gets_a_one_line_hint(files, tmp_path, monkeypatch,
                                                                                   caplog):  # fmt: skip
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime_choice, "installed", lambda name: name == "onnxruntime")
    monkeypatch.setattr(runtime_choice, "installed_module", lambda name: name == "onnxruntime")
    monkeypatch.setattr(runtime_choice, "_measure", lambda c: pytest.fail("one candidate measured"))
    with caplog.at_level("INFO", logger="detector.deploy.runtime_choice"):
        detector = api.load(files["onnx"], threads=1)
    assert isinstance(detector.runner, OnnxRunner) and not (tmp_path / "cache").exists()
    hints = [r.getMessage() for r in caplog.records if "not installed" in r.getMessage()]
    assert hints == ["runtime: openvino not installed (part of the default install; often faster than PyTorch on "
                     "the CPU): pip install openvino"]  # fmt: skip


def test_auto_on_a_checkpoint_lets_the_exported_runtimes_compete(files, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    measured = []
    original = runtime_choice._measure
    monkeypatch.setattr(runtime_choice, "_measure", lambda c: measured.append(sorted(c)) or original(c))
    detector = api.load(files["ckpt"], runtime="auto", threads=1)
    runtimes_here = {"torch", "onnxruntime", "openvino"} | (
        {"openvino-bf16"} if runtimes.installed("openvino-bf16") else set()
    )
    in_graph = {f"{name}, pre-processing in the graph" for name in runtimes_here if name.startswith("openvino")}
    assert set(measured[0]) == runtimes_here | in_graph and detector.runtime in runtimes_here

    assert len(list((tmp_path / "cache" / "exports").glob("*.onnx"))) == 1
    runtime = runtime_choice.choose(files["ckpt"], threads=1, fp32_only=True).runtime  # evaluation's choice
    assert set(measured[1]) == runtimes_here - {"openvino-bf16"} and runtime != "openvino-bf16"
    assert len(list((tmp_path / "cache" / "exports").glob("*.onnx"))) == 1, "the export is reused"


@pytest.mark.parametrize(
    "runtime,engine,precision,suffix",
    [
        ("torch", "", "", ""),
        ("onnxruntime-int8", "onnxruntime", "int8", ".onnx"),
        ("openvino", "openvino", "fp32", ".onnx"),
        ("openvino-int8", "openvino", "int8", ".xml"),
    ],
)
def test_table6_latency_times_the_model_step_of_that_runtime_at_one_thread(monkeypatch, runtime, engine, precision,
                                                                           suffix):  # fmt: skip
    """tools/table6.py --latency --runtime: the row's model exported to the runtime's file and precision, and
    the model step alone (one (1, 3, H, W) batch -> raw outputs) timed at 1 thread."""
    timed = []

    def fake_median_ms(call, repeats):
        threads = torch.get_num_threads()
        outputs = call()
        timed.append((threads, repeats, outputs))
        return 1.5

    monkeypatch.setattr(table6_latency, "median_ms", fake_median_ms)
    opened = []
    real_open = table6_latency.runtimes.open_runner
    monkeypatch.setattr(table6_latency.runtimes, "open_runner",
                        lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])  # fmt: skip
    cfg = ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=3)
    assert table6_latency.model_latency_ms(cfg, runtime, 2) == 1.5
    ((threads, repeats, outputs),) = timed
    assert threads == 1 and repeats == 2
    boxes, scores = outputs
    assert tuple(boxes.shape) == (1, 96, 4) and scores.shape[0] == 1 and scores.shape[1] == 96
    if engine:
        (runner,) = opened
        assert (runner.runtime, runner.precision, runner.path.suffix) == (engine, precision, suffix)
        assert runner.labels.ids.tolist() == [1, 2, 3]


@pytest.mark.parametrize("runtime,key", [("torch", "ckpt"), ("onnxruntime", "onnx"), ("openvino", "xml")])
def test_conf_before_nms_keeps_what_filtering_afterwards_keeps(files, runtime, key):
    """detector.load(conf=...) passes conf into post-processing, on every runtime: the detections equal the
    runner's full output (the model's own threshold) filtered afterwards."""
    frames = synthetic_frames(3, 120, 160, seed=5)
    model = api.load(str(files[key]), runtime=runtime, threads=1)
    full = model.runner(frames)  # every detection of the model's own threshold
    scores = np.concatenate([d.scores for d in full])
    model.conf = conf = float(np.median(scores))  # a threshold that cuts, with a detection at exactly conf
    assert model.runner.post.score_thresh < conf  # the model's own threshold is lower: conf does the cutting
    decode, seen = model.runner.decode, []
    model.runner.decode = lambda outputs, chunk, min_score=0.0: (
        seen.append(min_score) or decode(outputs, chunk, min_score)
    )
    detections = model(frames)
    assert seen and set(seen) == {conf}  # conf reached the post-processing
    for got, everything in zip(detections, full):
        keep = everything.scores >= conf
        assert 0 < keep.sum() < len(keep) or not len(keep)
        np.testing.assert_array_equal(got.scores, everything.scores[keep])
        np.testing.assert_array_equal(got.labels, everything.labels[keep])
        np.testing.assert_array_equal(got.boxes, everything.boxes[keep])


@pytest.mark.parametrize("resize", ["cv2", "tf_legacy"])
def test_preprocessing_in_the_openvino_graph_matches_python(files, tmp_path, resize):
    """uint8 frames of any size resized and normalised inside the compiled model give the raw outputs and the
    detections of Python's pre-processing, within the export tolerances: OpenCV's rounded bilinear, and TF's
    legacy one for converted models; downscale, upscale, extreme aspect, the input size itself."""
    ckpt = checkpoint.load(files["ckpt"])
    ckpt["config"]["data"]["resize"] = resize
    checkpoint.save(tmp_path / "model.pt", ckpt)
    onnx_file = export(load_model(tmp_path / "model.pt"), tmp_path / "model.onnx", ExportOptions(),
                       say=lambda _: None).path  # fmt: skip
    python_pre = OpenVinoRunner(onnx_file, "f32", threads=1)
    in_graph = OpenVinoRunner(onnx_file, "f32", threads=1, graph_preprocess=True)
    assert in_graph.resize == python_pre.resize == resize
    h, w = in_graph.input_size
    frames = [*synthetic_frames(2, 480, 640, seed=4), *synthetic_frames(1, 37, 1200, seed=5),
              *synthetic_frames(1, 50, 70, seed=6), *synthetic_frames(1, h, w, seed=7)]  # fmt: skip
    for frame in frames:
        batch = in_graph.prepare([frame])
        assert batch.dtype == np.uint8 and batch.shape == (1, *frame.shape)
        (boxes, scores), (ref_boxes, ref_scores) = in_graph.infer(batch), python_pre.infer(python_pre.prepare([frame]))
        assert np.abs(boxes - ref_boxes).max() < BOX_ATOL, frame.shape
        assert np.abs(scores - ref_scores).max() < SCORE_ATOL, frame.shape
        (det,), (ref,) = in_graph([frame], 0.05), python_pre([frame], 0.05)
        assert len(det) == len(ref) > 0 and np.abs(det.boxes - ref.boxes).max() < BOX_ATOL
    assert in_graph.prepare(frames[:2]).dtype == np.float32, "a batch of several frames keeps Python's"


@pytest.mark.parametrize("resize", ["cv2", "tf_legacy"])
def test_the_graph_preprocessing_is_pythons_pixel_for_pixel(resize):
    """The pre-processing steps alone (in front of an identity model) give Python's model input, divided by 255,
    NCHW: TF's legacy float bilinear to float precision; OpenCV's uint8 bilinear to within one level, and exactly
    on most pixels (OpenCV's fixed-point weights round a few differently from float ones, in both directions)."""
    import openvino as ov
    from openvino import opset11 as ops

    from detector.deploy.openvino_format import openvino_core, with_graph_preprocessing

    size = (40, 56)
    x = ops.parameter([1, 3, *size], np.float32)
    identity = ov.Model([ops.multiply(x, ops.constant(np.float32(1.0)))], [x])
    request = openvino_core().compile_model(with_graph_preprocessing(identity, size, resize), "CPU",
                                            {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()  # fmt: skip
    frames = [*synthetic_frames(1, 480, 640, seed=4), *synthetic_frames(1, 37, 1200, seed=5),
              *synthetic_frames(1, 21, 30, seed=6), *synthetic_frames(1, *size, seed=7)]  # fmt: skip
    for frame in frames:
        got, want = request.infer({0: frame[None]})[0], preprocess([frame], size, resize).numpy()
        if resize == "tf_legacy":
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=str(frame.shape))
        else:
            levels = np.abs(got - want) * 255
            assert levels.max() < 1 + 1e-3 and (levels < 1e-3).mean() > 0.85, (frame.shape, (levels < 1e-3).mean())


def test_a_cached_choice_opens_the_file_given_now_and_a_missing_runtime_is_one_line(files, tmp_path, monkeypatch):
    """Two copies of one model in two folders share a cache entry; each run opens its own copy. A file no
    installed runtime runs is the one-line install hint, not a crash."""
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    for folder in ("v1", "v2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.onnx").write_bytes(files["onnx"].read_bytes())
        choice = runtime_choice.choose(tmp_path / folder / "model.onnx", threads=1)
        assert choice.target == tmp_path / folder / "model.onnx"
    if not runtimes.installed("executorch"):
        (tmp_path / "model.pte").write_bytes(b"not read")
        with pytest.raises(UserError, match=r"^--runtime executorch is not installed: pip install"):
            api.load(tmp_path / "model.pte")
