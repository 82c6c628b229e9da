"""run_detection in-process: a tiny checkpoint over an image folder, Ctrl-C mid-run, unreadable sources."""

import json
import re
import signal
import threading

import cv2
import numpy as np
import pytest
import torch

from detector.app import api
from detector.app.api import Detector
from detector.app.run import run_detection
from detector.app.sources import open_source
from detector.errors import UserError
from detector.inference.runner import TorchRunner

from ..conftest import press_ctrl_c
from .test_app_outputs import FakeRunner
from .tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.jpg": (48, 64), "sub/b.png": (90, 30), "c.png": (40, 40)}.items():
        cv2.imwrite(str(images / name), cv2.resize((rng.random((6, 6, 3)) * 255).astype(np.uint8), (w, h)))
    (images / "broken.jpg").write_bytes(b"not an image")
    return images


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_tiny_checkpoint_over_an_image_folder(tmp_path, folder, one_thread):
    detector = api.load(write_tiny_checkpoint(tmp_path / "tiny.pt"), runtime="torch", conf=0.0)
    assert isinstance(detector.runner, TorchRunner) and detector.names == ["circle", "square", "triangle"]
    out, lines = tmp_path / "out", tmp_path / "d.jsonl"
    run = run_detection(detector, open_source(str(folder)), out, lines, progress=False)
    assert (run.frames, run.exit_code, run.stopped) == (3, 0, "")
    assert run.lines[0].startswith("3 frames in ") and "skipped 1 unreadable images" in run.lines[0]
    assert re.search(
        r"; model rate [\d.]+ FPS \(1 / \(model \+ post-process\)\), pipeline at [\d.]+ of it$", run.lines[0]
    )
    assert run.lines[1:] == [f"wrote {lines}", f"wrote 3 annotated images to {out}"]
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert sorted((r["width"], r["height"]) for r in records) == [(30, 90), (40, 40), (64, 48)]
    assert all(r["detections"] and r["frame"] == 0 for r in records)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == ["a.jpg", "c.png", "sub/b.png"]


class InterruptingBackend(FakeRunner):
    """Signals this process (SIGINT: Ctrl-C; SIGTERM: kill) while detecting on the second frame."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.calls, self.signum = 0, signum

    def infer(self, batch):
        self.calls += 1
        if self.calls == 2:
            press_ctrl_c(self.signum)
        return batch


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_frame_and_restores_the_handlers(tmp_path, folder, signum, code):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    lines, name = tmp_path / "d.jsonl", signal.Signals(signum).name
    run = run_detection(Detector(InterruptingBackend(signum)), open_source(str(folder)), None, lines, progress=False)
    assert (run.frames, run.exit_code, run.stopped) == (2, code, f"interrupted by {name}")
    assert run.lines[0].endswith(f"(interrupted by {name})") and len(lines.read_text().splitlines()) == 2
    assert {s: signal.getsignal(s) for s in before} == before


def test_no_readable_image_is_a_user_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "y.png").write_bytes(b"junk")
    with pytest.raises(UserError, match="none of the 2 images could be read"):
        run_detection(Detector(FakeRunner()), open_source(str(tmp_path)), progress=False)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_overlapped_video_keeps_order_and_writes_what_one_stage_after_another_writes(tmp_path, runtime):
    """Pre-processing on the reader thread and post-processing on the writer thread, the engine in between: the
    frames come out in order with the JSON lines of running the stages one after another, byte for byte."""
    from detector.deploy.pipeline import ExportOptions, export
    from detector.weights.resolve import load_model

    pytest.importorskip(runtime)
    model = export(load_model(write_tiny_checkpoint(tmp_path / "tiny.pt")), tmp_path / "tiny.onnx", ExportOptions(),
                   say=lambda _: None).path  # fmt: skip
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (80, 60))
    rng = np.random.default_rng(1)
    for _ in range(30):
        writer.write(cv2.resize((rng.random((8, 8, 3)) * 255).astype(np.uint8), (80, 60)))
    writer.release()
    detector = api.load(model, runtime=runtime, conf=0.05, threads=1)
    threads = {"prepare": set(), "infer": set(), "finish": set()}

    def traced(stage, call):
        def run(*args):
            threads[stage].add(threading.current_thread().name)
            return call(*args)

        return run

    for stage in threads:
        setattr(detector, stage, traced(stage, getattr(detector, stage)))
    written = {}
    for overlap in (True, False):
        lines = tmp_path / f"overlap_{overlap}.jsonl"
        run = run_detection(detector, open_source(str(video)), None, lines, progress=False, overlap=overlap)
        assert (run.frames, run.exit_code) == (30, 0)
        written[overlap] = lines.read_text()
        if overlap:
            assert threads == {"prepare": {"frame-reader"}, "infer": {"MainThread"}, "finish": {"frame-writer"}}
            for names in threads.values():
                names.clear()
    assert threads == {"prepare": {"MainThread"}, "infer": {"MainThread"}, "finish": {"MainThread"}}
    records = [json.loads(line) for line in written[True].splitlines()]
    assert [r["frame"] for r in records] == list(range(30)) and any(r["detections"] for r in records)
    assert written[True] == written[False]
