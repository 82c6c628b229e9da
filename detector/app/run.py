"""The detection loop: frames of a source -> detector -> outputs, with Ctrl-C / SIGTERM handling and a summary.

``run_detection`` reads every frame of an ``open_source`` result (``Frame`` objects, (H, W, 3) uint8 RGB),
runs a ``detector.app.api.Detector`` on it and hands the ``Detections`` to ``Outputs``. Ctrl-C (SIGINT) and
SIGTERM finish the frame in progress, then the outputs are finalised (the .mp4 renamed into place, the JSON
lines closed); a second Ctrl-C stops at once. It returns the report lines (the summary, then what was
written) and the exit status: 0 at the end of the source or on q / Esc, 128 + the signal number after a signal
(130, 143).
Signal handlers can only be installed from the main thread, so call it there.

The stages overlap, so a run goes at about the rate of its slowest stage instead of the sum of them:

- a reader thread decodes the frames of files (videos, images) and pre-processes them (resize, normalise:
  ``Detector.prepare``) into a queue of ``READ_QUEUE`` frames;
- the engine runs in the calling (main) thread (``Detector.infer``) - every runtime releases the GIL while it
  computes;
- a writer thread post-processes (``Detector.finish``: decoding, NMS, selection), draws, encodes the video and
  writes the JSON lines from a queue of ``WRITE_QUEUE`` frames.

Frames stay in order and each gets exactly the detections ``detector(frame)`` gives (the same three stages, on other
threads). PyTorch's CPU engine keeps the three in the main thread: pre- and post-processing compute on PyTorch's
thread pool too, and beside the engine they oversubscribe the cores (0.7x measured). ``overlap=False`` runs
pre-processing, engine and post-processing one after another in the main thread (the benchmark's baseline,
``benchmarks/video.py``). Both queues are bounded, so memory stays flat on long videos. Cameras and streams are read
and pre-processed in the main loop (``LiveSource`` decodes on its own thread already), and with ``show``
post-processing and writing stay in the main thread (HighGUI windows must be driven from it on macOS). Every frame that
was detected is written before the outputs are closed - at the end, on q, on Ctrl-C and on errors - and an error in
the reader or the writer is raised again in the caller as the same exception.
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detector import cli
from detector.app.api import Detector
from detector.app.outputs import Outputs
from detector.app.sources import Frame, LiveSource
from detector.errors import UserError
from detector.inference.timing import StageTimes
from detector.ssd.detections import Detections

log = logging.getLogger(__name__)

READ_QUEUE = 4  # decoded frames waiting for the model: enough to absorb decode jitter (keyframes), little memory
WRITE_QUEUE = 4  # detected frames waiting to be drawn and written
_END = object()  # the last item of a queue


@dataclass
class DetectionRun:
    """What a run did: frames processed, the exit status, why it stopped early ("" when it did not) and the
    report lines to show the user."""

    frames: int
    exit_code: int
    stopped: str
    lines: list[str] = field(default_factory=list)


def summary(frames: int, elapsed: float, read_ms: float, times: StageTimes, source, stopped: str) -> str:
    """The one-line summary: frames, seconds, mean FPS, milliseconds per frame of each stage, skips and drops,
    and the model rate (1 / (model + post-process)) with the share of it the whole run reached."""
    per = times.per_frame()
    n = max(frames, 1)
    fps = frames / max(elapsed, 1e-9)
    text = (
        f"{frames} frames in {elapsed:.1f} s, mean {fps:.1f} FPS; ms per frame: "
        f"read {read_ms / n:.1f}, pre-process {per['preprocess']:.1f}, model {per['model']:.1f}, "
        f"post-process {per['postprocess']:.1f}, draw/write {per.get('draw_write', 0.0):.1f}"
    )
    if source.skipped:
        text += f"; skipped {source.skipped} unreadable images"
    if source.dropped:
        text += f"; dropped {source.dropped} stale frames"
    model_ms = per["model"] + per["postprocess"]
    if frames and model_ms > 0:
        rate = 1e3 / model_ms
        text += f"; model rate {rate:.1f} FPS (1 / (model + post-process)), pipeline at {fps / rate:.2f} of it"
    return text + (f" ({stopped})" if stopped else "")


Prepare = Callable[[np.ndarray], object]  # a decoded frame -> the engine's input (``Detector.prepare``)
Finish = Callable[[], Detections]  # -> a frame's Detections (post-processing, or detections already made)


class DirectFeed:
    """Frames read in the caller's thread: ``get()`` -> (frame, engine input or None, read milliseconds), or None
    at the end; with ``prepare`` the frame is pre-processed here too."""

    def __init__(self, frames: Iterator[Frame], prepare: Prepare | None = None) -> None:
        self.frames, self.prepare = frames, prepare

    def get(self) -> tuple[Frame, object, float] | None:
        t0 = time.perf_counter()
        frame = next(self.frames, None)
        if frame is None:
            return None
        ms = (time.perf_counter() - t0) * 1e3
        return frame, self.prepare(frame.image) if self.prepare else None, ms

    def close(self) -> None:
        pass


class ReaderFeed:
    """Frames read ahead by a thread into a queue of ``size`` (pre-processed there with ``prepare``): ``get()`` ->
    (frame, engine input or None, read milliseconds), or None at the end; an exception of the iterator or of
    ``prepare`` is raised by ``get()``. ``close()`` stops and joins the thread."""

    def __init__(self, frames: Iterator[Frame], prepare: Prepare | None = None, size: int = READ_QUEUE) -> None:
        self.frames, self.prepare = frames, prepare
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.error: BaseException | None = None
        self.ended = False  # the sentinel was taken
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                frame = next(self.frames, None)
                if frame is None:
                    break
                ms = (time.perf_counter() - t0) * 1e3
                self.queue.put((frame, self.prepare(frame.image) if self.prepare else None, ms))
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
        finally:
            try:
                close = getattr(self.frames, "close", None)
                if close is not None:  # end a generator stopped early here, before the source's capture is released
                    close()
            finally:
                self.queue.put(_END)  # close() drains the queue, so this cannot block for ever

    def get(self) -> tuple[Frame, object, float] | None:
        item = self.queue.get()
        if item is not _END:
            return item
        self.ended = True
        if self.error is not None:
            raise self.error
        return None

    def close(self) -> None:
        """Stop reading and wait for the thread: frames still queued are dropped (they were never detected)."""
        self._stop.set()
        while not self.ended:  # make room so a reader blocked on a full queue reaches its sentinel
            self.ended = self.queue.get() is _END
        self._thread.join()


class InlineSink:
    """``outputs.write`` in the caller's thread (needed for the --show window); ``write(frame, finish, fps)`` ->
    False on q / Esc."""

    error = None  # an error of write() is raised in the caller directly

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs
        self.ms = 0.0  # milliseconds spent drawing and writing

    def write(self, frame: Frame, finish: Finish, fps: float) -> bool:
        det = finish()
        t0 = time.perf_counter()
        try:
            return self.outputs.write(frame, det, fps)
        finally:
            self.ms += (time.perf_counter() - t0) * 1e3

    def finish(self) -> None:
        pass


class WriterSink:
    """``finish()`` (post-processing) and ``outputs.write`` on a thread fed by a queue of ``size``. ``write``
    queues a frame (always True: no window here) and raises an earlier error of the thread; ``finish()`` writes
    what is queued, then joins the thread."""

    def __init__(self, outputs: Outputs, size: int = WRITE_QUEUE) -> None:
        self.outputs = outputs
        self.ms = 0.0  # milliseconds spent drawing and writing, read after finish()
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not _END:
            if self.error is not None:
                continue  # after a failure only drain, so the main thread never blocks on a full queue
            frame, finish, fps = item
            try:
                det = finish()
                t0 = time.perf_counter()
                self.outputs.write(frame, det, fps)
                self.ms += (time.perf_counter() - t0) * 1e3
            except BaseException as exc:  # handed to the main thread, which raises it
                self.error = exc

    def write(self, frame: Frame, finish: Finish, fps: float) -> bool:
        if self.error is not None:
            raise self.error
        self.queue.put((frame, finish, fps))
        return True

    def finish(self) -> None:
        """Write every queued frame and end the thread (idempotent); the caller then checks ``error``."""
        if not self._finished:
            self._finished = True
            self.queue.put(_END)
            self._thread.join()


def _given(det: Detections) -> Detections:
    return det


def _finish(detector: Detector, raw, frame: Frame) -> Detections:
    return detector.finish(raw, frame.image.shape[:2]).at(frame.source, frame.index)


def run_detection(
    detector: Detector,
    source,
    output_dir: str | Path | None = None,
    save_json: str | Path | None = None,
    show: bool = False,
    progress: bool = True,
    overlap: bool = True,
) -> DetectionRun:
    """Detect on every frame of ``source`` (closed at the end) and write ``Outputs``; see the module docstring
    (``overlap``: pre- and post-processing on the reader and writer threads).

    An image source none of whose images could be read is a UserError.
    """
    stopped, exit_code = "", 0

    def on_signal(signum: int) -> None:
        """Ctrl-C (SIGINT) or SIGTERM: finish the current frame, then finalise the outputs."""
        nonlocal stopped, exit_code
        stopped, exit_code = f"interrupted by {signal.Signals(signum).name}", 128 + signum
        if isinstance(source, LiveSource):
            source.stop()

    outputs, feed, sink, frames, read_ms, fps = None, None, None, 0, 0.0, 0.0
    start = time.perf_counter()
    # From opening the outputs to finalising them, a signal only asks to stop: the .mp4 is always renamed into place.
    with cli.stop_requests(on_signal):
        try:
            outputs = Outputs(source, output_dir, save_json, show)
            desc = Path(source.spec).name or source.spec
            bar = tqdm(total=source.total, unit="frame", desc=desc, disable=source.live or not progress)
            if source.live:
                log.info("reading %s; press Ctrl-C%s to stop", source.spec, " or q in the window" if show else "")
            # A live source keeps only its newest frame on its own thread; a queue after it would hold a frame while
            # the model works on the previous one, so each detection would lag by one more model time. Taking the
            # frame when the model is free gives the freshest one, and all that is left to do here is a cheap copy.
            overlap = overlap and not detector.runner.serial_stages
            prepare = detector.prepare if overlap else None
            post_on_writer = overlap and not show
            feed = DirectFeed(iter(source), prepare) if source.live else ReaderFeed(iter(source), prepare)
            sink = InlineSink(outputs) if show else WriterSink(outputs)
            last = time.perf_counter()
            with bar, logging_redirect_tqdm():
                while not stopped:
                    item = feed.get()
                    if item is None:
                        break
                    frame, batch, ms = item
                    raw = detector.infer(detector.prepare(frame.image) if batch is None else batch)
                    finish = functools.partial(_finish, detector, raw, frame)
                    if not post_on_writer:  # post-processing here: the writer only writes
                        finish = functools.partial(_given, finish())
                    done = time.perf_counter()
                    rate = 1.0 / max(done - last, 1e-6)  # the output rate: between consecutive engine calls ending
                    fps, last = (0.9 * fps + 0.1 * rate if frames else rate), done
                    if not sink.write(frame, finish, fps):
                        stopped = "quit"
                    read_ms += ms
                    frames += 1
                    bar.update(1)
            sink.finish()
            if sink.error is not None:
                raise sink.error
        finally:
            if feed is not None:
                feed.close()
            if sink is not None:
                sink.finish()  # every detected frame is written before the outputs are finalised
                detector.times.add("draw_write", sink.ms)
            written = outputs.close() if outputs is not None else []
            source.close()
    elapsed = time.perf_counter() - start
    if frames == 0 and source.kind == "images":
        raise UserError(f"{source.spec}: none of the {source.total} images could be read")
    lines = [summary(frames, elapsed, read_ms, detector.times, source, stopped)]
    lines += [f"wrote {item}" for item in written]
    if output_dir and source.kind == "images":
        lines.append(f"wrote {frames} annotated images to {output_dir}")
    return DetectionRun(frames, exit_code, stopped, lines)
