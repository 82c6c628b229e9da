"""run_detection's pipeline on fakes that sleep: stages overlap, frames stay in order, errors and stops surface.

The source, the model and the outputs are fakes whose work is ``time.sleep`` (no CPU), so the timings hold on a
loaded machine; each fake records the thread it ran on and what it did.
"""

import re
import signal
import threading
import time

import numpy as np
import pytest

from detector.app.api import Detector
from detector.app.run import run_detection
from detector.app.sources import Frame, LiveSource
from detector.errors import UserError

from ..conftest import press_ctrl_c
from .test_app_outputs import FakeRunner


class FakeSource:
    """A video of ``n`` tiny frames, each taking ``delay`` s to read; ``fail_at`` raises ``error`` at that index."""

    live = False
    kind = "video"
    spec = "fake.mp4"
    name = "fake"
    fps = 10.0

    def __init__(self, n: int, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.total, self.delay, self.fail_at = n, delay, fail_at
        self.skipped = self.dropped = 0
        self.error = UserError("fake.mp4: frame 3 is corrupt")
        self.events: list[str] = []  # "read N", "generator closed", "closed"
        self.threads: set[threading.Thread] = set()

    def __iter__(self):
        try:
            for i in range(self.total):
                self.threads.add(threading.current_thread())
                time.sleep(self.delay)
                if i == self.fail_at:
                    raise self.error
                self.events.append(f"read {i}")
                yield Frame(np.zeros((4, 6, 3), np.uint8), self.spec, i, self.name)
        finally:
            self.events.append("generator closed")

    def close(self) -> None:
        self.events.append("closed")


class FakeLive(LiveSource):
    """A camera without a capture: frames until ``stop()``, read in whatever thread iterates."""

    def __init__(self) -> None:  # no capture, no thread
        self.spec, self.name, self.total, self.fps = "cam7", "cam7", None, 30.0
        self.skipped = self.dropped = 0
        self.stopped = False
        self.threads: set[threading.Thread] = set()

    def __iter__(self):
        i = 0
        while not self.stopped:
            self.threads.add(threading.current_thread())
            yield Frame(np.zeros((4, 6, 3), np.uint8), self.spec, i, self.name)
            i += 1

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.stopped = True


class SlowBackend(FakeRunner):
    """Detections after ``delay`` s of model time; sends this process SIGINT on call ``interrupt_at``."""

    def __init__(self, delay: float = 0.0, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.delay, self.interrupt_at, self.calls = delay, interrupt_at, 0
        self.threads: set[threading.Thread] = set()

    def infer(self, batch):
        self.threads.add(threading.current_thread())
        self.calls += 1
        if self.calls == self.interrupt_at:
            press_ctrl_c()
        time.sleep(self.delay)
        return batch


class FakeOutputs:
    """Stands in for ``Outputs``: each write takes ``delay`` s; ``fail_at`` raises, ``quit_at`` returns False."""

    delay, fail_at, quit_at = 0.0, None, None
    error = OSError("disk full")
    made: list["FakeOutputs"] = []

    def __init__(self, source, output_dir=None, save_json=None, show=False) -> None:
        self.events: list[str] = []  # "write N", "close"
        self.threads: set[threading.Thread] = set()
        type(self).made.append(self)

    def write(self, frame: Frame, det, fps: float) -> bool:
        assert fps > 0 and det.boxes.shape == (2, 4)  # the fake detections with a score >= 0.3
        assert (det.source, det.frame) == (frame.source, frame.index)
        self.threads.add(threading.current_thread())
        time.sleep(self.delay)
        if frame.index == self.fail_at:
            raise self.error
        self.events.append(f"write {frame.index}")
        return frame.index != self.quit_at

    def close(self) -> list[str]:
        self.events.append("close")
        return ["fake.mp4"]

    def written(self) -> list[int]:
        return [int(e.split()[1]) for e in self.events if e.startswith("write")]


@pytest.fixture
def outputs(monkeypatch):
    """A fresh FakeOutputs class patched into run_detection; the instance it made is ``outputs.made[0]``."""

    class Outputs(FakeOutputs):
        made = []

    monkeypatch.setattr("detector.app.run.Outputs", Outputs)
    return Outputs


def test_stages_overlap_and_every_frame_is_written_once_in_order(outputs):
    n, delay = 20, 0.015
    outputs.delay = delay
    source, backend = FakeSource(n, delay), SlowBackend(delay)
    start = time.perf_counter()
    run = run_detection(Detector(backend), source, progress=False)
    elapsed = time.perf_counter() - start
    (out,) = outputs.made
    assert elapsed < 0.75 * 3 * n * delay  # about one stage per frame, not the sum of the three
    assert out.written() == list(range(n)) and out.events[-1] == "close"
    assert (run.frames, run.exit_code, run.stopped, run.lines[1:]) == (n, 0, "", ["wrote fake.mp4"])
    main = threading.main_thread()
    assert backend.threads == {main} and main not in source.threads and main not in out.threads
    ratio = re.search(
        r"; model rate [\d.]+ FPS \(1 / \(model \+ post-process\)\), pipeline at ([\d.]+) of it$", run.lines[0]
    )
    assert ratio and float(ratio.group(1)) > 0.5  # run one stage after another, it would be at most 1/3
    assert source.events[-1] == "closed"


def test_ctrl_c_writes_every_detected_frame_then_closes(outputs):
    outputs.delay = 0.02  # a slow writer: frames are still queued for it when Ctrl-C comes
    source, backend = FakeSource(60), SlowBackend(interrupt_at=8)
    before = signal.getsignal(signal.SIGINT)
    run = run_detection(Detector(backend), source, progress=False)
    (out,) = outputs.made
    assert (run.frames, run.exit_code, run.stopped) == (8, 130, "interrupted by SIGINT")
    assert out.written() == list(range(8)) and out.events[-1] == "close"
    assert run.lines[0].endswith("(interrupted by SIGINT)") and signal.getsignal(signal.SIGINT) is before
    # the reader stopped early and ended its generator before the source (its capture) was closed
    assert "read 59" not in source.events and source.events[-2:] == ["generator closed", "closed"]


def test_a_source_error_is_raised_in_the_caller_after_closing(outputs):
    source = FakeSource(10, fail_at=3)
    with pytest.raises(UserError) as info:
        run_detection(Detector(SlowBackend()), source, progress=False)
    (out,) = outputs.made
    assert info.value is source.error  # the same exception, not a copy or a wrapper
    assert out.written() == [0, 1, 2] and out.events[-1] == "close" and source.events[-1] == "closed"


def test_a_writer_error_is_raised_in_the_caller_after_closing(outputs):
    outputs.fail_at = 2
    source, backend = FakeSource(200), SlowBackend(0.002)
    with pytest.raises(OSError) as info:
        run_detection(Detector(backend), source, progress=False)
    (out,) = outputs.made
    assert info.value is outputs.error
    assert out.written() == [0, 1] and out.events[-1] == "close" and source.events[-1] == "closed"
    assert backend.calls < 200  # the run stopped soon after the failure, not at the end of the source


def test_show_writes_on_the_main_thread_and_q_quits(outputs):
    outputs.quit_at = 3
    source = FakeSource(10)
    run = run_detection(Detector(SlowBackend()), source, show=True, progress=False)
    (out,) = outputs.made
    main = threading.main_thread()
    assert out.threads == {main} and main not in source.threads  # the window on main, reading still ahead
    assert (run.frames, run.exit_code, run.stopped) == (4, 0, "quit")
    assert out.written() == [0, 1, 2, 3] and out.events[-1] == "close"


def test_live_sources_are_read_in_the_main_loop_and_ctrl_c_stops_them(outputs):
    source = FakeLive()
    run = run_detection(Detector(SlowBackend(interrupt_at=5)), source, progress=False)
    (out,) = outputs.made
    assert source.threads == {threading.main_thread()}  # no queue between the camera and the model
    assert source.stopped and (run.frames, run.exit_code) == (5, 130)
    assert out.written() == list(range(5)) and out.events[-1] == "close"
