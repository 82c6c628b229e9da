"""The detection loop: frames of a source -> detector -> outputs, with Ctrl-C / SIGTERM handling and a summary.

``run_detection`` reads every frame of an ``open_source`` result (``Frame`` objects, (H, W, 3) uint8 RGB),
runs a ``FrameDetector`` on it and hands the detections to ``Outputs``. Ctrl-C (SIGINT) and SIGTERM finish the
frame in progress, then the outputs are finalised (the .mp4 renamed into place, the JSON lines closed); a
second Ctrl-C stops at once. It returns the report lines (the summary, then what was written) and the exit
status: 0 at the end of the source or on q / Esc, 128 + the signal number after a signal (130, 143).
Signal handlers can only be installed from the main thread, so call it there.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detector.app.frame_detector import FrameDetector
from detector.app.outputs import Outputs
from detector.app.sources import LiveSource
from detector.deploy.torch_runtime import StageTimes
from detector.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class DetectionRun:
    """What a run did: frames processed, the exit status, why it stopped early ("" when it did not) and the
    report lines to show the user."""

    frames: int
    exit_code: int
    stopped: str
    lines: list[str] = field(default_factory=list)


def summary(frames: int, elapsed: float, read_ms: float, times: StageTimes, source, stopped: str) -> str:
    """The one-line summary: frames, seconds, mean FPS, milliseconds per frame of each stage, skips and drops."""
    per = times.per_frame()
    n = max(frames, 1)
    text = (
        f"{frames} frames in {elapsed:.1f} s, mean {frames / max(elapsed, 1e-9):.1f} FPS; ms per frame: "
        f"read {read_ms / n:.1f}, pre-process {per['preprocess']:.1f}, model {per['model']:.1f}, "
        f"post-process {per['postprocess']:.1f}, draw/write {per.get('draw_write', 0.0):.1f}"
    )
    if source.skipped:
        text += f"; skipped {source.skipped} unreadable images"
    if source.dropped:
        text += f"; dropped {source.dropped} stale frames"
    return text + (f" ({stopped})" if stopped else "")


def run_detection(
    detector: FrameDetector,
    source,
    output_dir: str | Path | None = None,
    save_json: str | Path | None = None,
    show: bool = False,
    progress: bool = True,
) -> DetectionRun:
    """Detect on every frame of ``source`` (closed at the end) and write ``Outputs``; see the module docstring.

    An image source none of whose images could be read is a UserError.
    """
    stopped, exit_code = "", 0

    def on_signal(signum: int, _frame: object) -> None:
        """Ctrl-C (SIGINT) or SIGTERM: finish the current frame, then finalise the outputs."""
        nonlocal stopped, exit_code
        stopped, exit_code = f"interrupted by {signal.Signals(signum).name}", 128 + signum
        if isinstance(source, LiveSource):
            source.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    outputs, frames, read_ms, fps = None, 0, 0.0, 0.0
    start = time.perf_counter()
    try:
        outputs = Outputs(source, output_dir, save_json, show)
        desc = Path(source.spec).name or source.spec
        bar = tqdm(total=source.total, unit="frame", desc=desc, disable=source.live or not progress)
        if source.live:
            log.info("reading %s; press Ctrl-C%s to stop", source.spec, " or q in the window" if show else "")
        frames_iter = iter(source)
        with bar, logging_redirect_tqdm():
            while not stopped:
                t0 = time.perf_counter()
                frame = next(frames_iter, None)
                t1 = time.perf_counter()
                if frame is None:
                    break
                det = detector(frame.image)
                t2 = time.perf_counter()
                fps = 0.9 * fps + 0.1 * 1.0 / max(t2 - t0, 1e-6) if frames else 1.0 / max(t2 - t0, 1e-6)
                if not outputs.write(frame, det, fps):
                    stopped = "quit"
                detector.times.add("draw_write", (time.perf_counter() - t2) * 1e3)
                read_ms += (t1 - t0) * 1e3
                frames += 1
                bar.update(1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
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
