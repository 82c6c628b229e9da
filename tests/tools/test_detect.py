"""tools/detect.py on every kind of source, its JSON lines, annotated outputs and errors."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import detector
from detector import checkpoint
from detector.app.sources import LiveSource, open_source, safe_name
from detector.build import build_model
from detector.config import Config, ModelConfig, to_dict
from detector.errors import UserError

from ..conftest import ROOT, randomise_batchnorm, run_tool, tool_in_process

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "triangle"}]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # small models; one thread is fastest and deterministic


def small_checkpoint(path) -> None:
    """A 128x128 MobileNetV3-Small SSDLite with 3 classes whose scores are spread out (no ties), like a trained
    model's: random BatchNorm statistics and wide head weights."""
    cfg = Config()
    cfg.model = ModelConfig(backbone="mobilenet_v3_small", image_size=(128, 128), num_classes=3)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    randomise_batchnorm(model)
    for m in [*model.cls_heads.modules(), *model.box_heads.modules()]:
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.normal_(0, 0.3)
    checkpoint.save(path, {"model": model.state_dict(), "config": to_dict(cfg), "categories": CATEGORIES})


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize((rng.random((h // 8 + 2, w // 8 + 2, 3)) * 255).astype(np.uint8), (w, h))


def write_video(path, frames: int, fps: float, size=(96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(smooth_image(size[1], size[0], i))
    writer.release()


def detect(*args: str) -> subprocess.CompletedProcess:
    """tools/detect.py in this process (the tests of the process itself start one: Ctrl-C, a missing camera)."""
    return tool_in_process("tools/detect.py", *args)


def video_args(source, weights, out, lines) -> list[str]:
    """tools/detect.py arguments: ``--video source`` with ``weights``, annotated output into ``out`` and JSON
    lines into ``lines``."""
    return ["--video", str(source), "--weights", str(weights), "--output-dir", str(out), "--save-json", str(lines)]


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process models run on one thread, as the tools in these tests (ENV): small models gain nothing from
    more, and a second thread can stall when the other core is busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "small.pt"
    small_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """JPEG, grayscale PNG, RGBA PNG, a 37x1200 PNG in a subfolder, a corrupt .jpg and a text file."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "a.jpg"), smooth_image(240, 320, 0))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(smooth_image(100, 150, 1), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([smooth_image(80, 60, 2), np.full((80, 60), 200, np.uint8)]))
    cv2.imwrite(str(folder / "sub" / "thin.png"), smooth_image(1200, 37, 3))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    return folder


SIZES = {"a.jpg": (240, 320), "gray.png": (100, 150), "rgba.png": (80, 60), "thin.png": (1200, 37)}


def test_folder_of_mixed_images(weights, mixed_folder, tmp_path):
    out, lines = tmp_path / "out", tmp_path / "dets.jsonl"
    result = detect(
        str(mixed_folder), "--weights", str(weights), "--output-dir", str(out), "--save-json", str(lines),
        "--conf", "0.4", "--classes", "circle", "triangle",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr  # warned and skipped
    assert "4 frames" in result.stdout and "skipped 1 unreadable" in result.stdout and "model" in result.stdout
    records = read_lines(lines)
    assert sorted(os.path.basename(r["source"]) for r in records) == sorted(SIZES)
    for r in records:
        h, w = SIZES[os.path.basename(r["source"])]
        assert (r["height"], r["width"], r["frame"]) == (h, w, 0)
        assert r["detections"], "the spread-out random model detects something everywhere"
        for d in r["detections"]:
            assert set(d) == {"bbox", "score", "category_id", "name"}
            x1, y1, x2, y2 = d["bbox"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
            assert d["score"] >= 0.4  # --conf
            assert {"id": d["category_id"], "name": d["name"]} in CATEGORIES and d["name"] != "square"  # --classes
    # annotated images keep the source's relative names, sizes and formats
    for rel in ("a.jpg", "gray.png", "rgba.png", "sub/thin.png"):
        annotated = cv2.imread(str(out / rel))
        assert annotated is not None and annotated.shape[:2] == SIZES[os.path.basename(rel)]


def test_the_python_api_gives_what_detect_py_writes(weights, mixed_folder, tmp_path):
    """detector.load(CKPT)(IMAGE_PATH) and (rgb_array): the records of detect.py --save-json, with its defaults
    (conf 0.3, every class) and with --conf / --classes."""
    image, lines = mixed_folder / "a.jpg", tmp_path / "one.jsonl"
    for options in ([], ["--conf", "0.6", "--classes", "square", "triangle"]):
        result = detect(str(image), "--weights", str(weights), "--save-json", str(lines), *options)
        assert result.returncode == 0, result.stderr
        (written,) = read_lines(lines)
        conf = float(options[1]) if options else 0.3
        model = detector.load(weights, conf=conf, classes=options[3:] or None)
        assert model(image).to_json() == written and model(str(image)).to_json() == written
        rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        from_array = model(rgb).to_json()
        assert from_array["detections"] == written["detections"] and from_array["source"] == ""
        assert [d.to_json() for d in model([image, rgb])] == [written, from_array]
    assert written["detections"] and {d["name"] for d in written["detections"]} <= {"square", "triangle"}


def unmatched(dets: list[dict], others: list[dict], floor: float, box_atol: float, score_atol: float) -> list:
    """The detections of ``dets`` scored above ``floor`` with no detection of ``others`` of the same class within
    ``box_atol`` pixels and ``score_atol``."""
    return [
        d for d in dets if d["score"] > floor and not any(
            o["category_id"] == d["category_id"] and abs(o["score"] - d["score"]) <= score_atol
            and np.abs(np.subtract(o["bbox"], d["bbox"])).max() <= box_atol for o in others
        )
    ]  # fmt: skip


def test_default_runtime_is_the_measured_fastest_named_in_one_line_equal_to_torch(weights, mixed_folder, tmp_path):
    """Without --runtime a checkpoint runs on the fastest installed runtime measured here (one log line says which)
    and detects what --runtime torch detects within the export tolerances (bf16's own where it was chosen)."""
    image, chosen, reference = mixed_folder / "a.jpg", tmp_path / "default.jsonl", tmp_path / "torch.jsonl"
    result = detect(str(image), "--weights", str(weights), "--save-json", str(chosen), "--conf", "0.2")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("INFO runtime: ")]
    assert len(said) == 1 and ", the fastest on this CPU (" in said[0] and "--runtime NAME forces one" in said[0]
    runtime = said[0].removeprefix("INFO runtime: ").split(",")[0]
    assert runtime in ("torch", "onnxruntime", "openvino", "openvino-bf16")
    result = detect(str(image), "--weights", str(weights), "--runtime", "torch", "--save-json", str(reference),
                    "--conf", "0.2")  # fmt: skip
    assert result.returncode == 0 and "INFO runtime: " not in result.stderr
    (got,), (want,) = read_lines(chosen), read_lines(reference)
    scale = max(SIZES["a.jpg"]) / 128  # input pixels -> image pixels
    box_atol, score_atol = (0.01 * 128 * scale, 0.03) if runtime == "openvino-bf16" else (0.01 * scale, 1e-4)
    assert want["detections"], "the spread-out random model detects something"
    # below the lowest score of a list cut at the total limit, the two may keep different detections
    limit = Config().postprocess.max_detections
    cut = [min(d["score"] for d in r["detections"]) for r in (got, want) if len(r["detections"]) == limit]
    for a, b in ((got, want), (want, got)):
        assert not unmatched(a["detections"], b["detections"], max([0.2, *cut]) + score_atol, box_atol, score_atol)


def test_video_file_gives_a_complete_mp4_and_every_frame(weights, tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, frames=24, fps=12.0)
    out, lines = tmp_path / "out", tmp_path / "v.jsonl"
    result = detect(*video_args(video, weights, out, lines))
    assert result.returncode == 0, result.stderr
    assert [r["frame"] for r in read_lines(lines)] == list(range(24))
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 24 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 64)
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]  # no partial file left behind


def test_sigint_mid_video_finalises_the_mp4(weights, tmp_path):
    video = tmp_path / "long.mp4"
    write_video(video, frames=300, fps=15.0, size=(160, 120))
    out, lines = tmp_path / "out", tmp_path / "l.jsonl"
    cmd = [sys.executable, "tools/detect.py", *video_args(video, weights, out, lines)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lines.exists() and len(lines.read_text().splitlines()) >= 5):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    processed = len(read_lines(lines))
    assert 5 <= processed < 300
    cap = cv2.VideoCapture(str(out / "long.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == processed and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)


def test_missing_camera_is_a_one_line_error(weights):
    result = run_tool("tools/detect.py", "--video", "cam9", "--weights", str(weights), env=ENV, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: cam9: cannot open camera 9 (no such device, unreachable or unsupported)"


def test_missing_and_unreadable_sources_are_user_errors(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "nope.jpg"): "no such file",
        str(tmp_path / "bad.mp4"): "cannot open as a video",
        str(tmp_path / "empty"): "no image files",
        str(tmp_path / "*.png"): "no files match",
        "rtsp://127.0.0.1:9/live": "cannot open the stream",
    }
    for spec, message in cases.items():
        with pytest.raises(UserError, match=message) as info:
            open_source(spec)
        assert str(info.value).startswith(spec) and "\n" not in str(info.value)


def test_show_without_a_display_is_a_clear_error(weights, mixed_folder, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = detect(str(mixed_folder / "a.jpg"), "--weights", str(weights), "--show")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: --show:") and "--output-dir" in result.stderr


def test_output_names_cannot_escape():
    assert safe_name("../../etc/passwd") == "etc/passwd"
    assert safe_name("/abs/..\\x.jpg") == "abs/x.jpg"
    assert safe_name("rtsp://user:pw@host:554/../../live?x=1") == "rtsp_/user_pw_host_554/live_x_1"
    assert safe_name("..") == "frame" and safe_name(".hidden") == "hidden"


def test_live_reader_keeps_only_the_newest_frame(tmp_path):
    video = tmp_path / "cam.mp4"
    write_video(video, frames=60, fps=30.0)
    source = LiveSource("fake-camera", str(video))
    try:
        indices = []
        for frame in source:
            assert frame.image.shape == (64, 96, 3) and frame.image.dtype == np.uint8
            indices.append(frame.index)
            time.sleep(0.02)  # a consumer slower than the reader
    finally:
        source.close()
    assert indices == sorted(set(indices)) and len(indices) < 60 and indices[-1] == 59  # the newest comes last
    assert source.dropped == 60 - len(indices)  # every frame not handed out was dropped, none was queued


def test_open_source_kinds(mixed_folder, tmp_path):
    assert open_source(str(mixed_folder)).total == 5  # four images and the corrupt one
    (single,) = open_source(str(mixed_folder / "sub" / "thin.png"))
    assert single.image.shape == (1200, 37, 3) and single.name == "thin.png" and single.index == 0
    with pytest.raises(UserError, match="broken.jpg: not a decodable image"):
        list(open_source(str(mixed_folder / "broken.jpg")))  # a single unreadable image is an error, not a skip
    pngs = open_source(str(mixed_folder / "*.png"))
    assert pngs.names == ["gray.png", "rgba.png"] and pngs.kind == "images"
    nested = open_source(str(mixed_folder / "**" / "*.png"))
    assert nested.names == ["gray.png", "rgba.png", "sub/thin.png"]
    assert open_source(str(mixed_folder / "a.jpg")).kind == "images"
    write_video(tmp_path / "v.avi", frames=3, fps=10.0)
    video = open_source(str(tmp_path / "v.avi"))
    assert (video.kind, video.total, video.fps) == ("video", 3, 10.0)
    video.close()
