"""Frame sources for detection: an image file, a folder, a glob, a video file, a camera or a network stream.

``open_source(spec)`` picks the kind from the text:

- ``camN`` (N a number): webcam N; ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``:
  a stream. Both are *live*: a thread reads the capture continuously and keeps only the newest frame, so a slow
  model drops stale frames instead of falling behind the camera.
- an existing folder: every image file under it (recursively, sorted); a text with ``* ? [``: a glob;
  a file with an image extension: that image; any other file: a video, read in order, every frame.

Every source yields ``Frame`` objects with (H, W, 3) uint8 RGB images. Unreadable images inside a folder or glob
are logged and skipped; a source that cannot be opened at all is a ``UserError`` naming it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detector.data.image_io import IMAGE_EXTENSIONS, image_files, read_image
from detector.errors import UserError

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_CAMERA = re.compile(r"cam(\d+)")
# FFmpeg inside OpenCV prints its own messages ("moov atom not found", "Connection refused") to stderr; we
# report failures ourselves on one line. Read by OpenCV when its FFmpeg backend starts; a user's value wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL


@dataclass
class Frame:
    """One decoded frame: ``image`` (H, W, 3) uint8 RGB, the ``source`` it came from (file or spec), its
    ``index`` in that source (0 for still images) and ``name``, a relative path safe to join under an output
    folder (see ``safe_name``)."""

    image: np.ndarray
    source: str
    index: int
    name: str


def safe_name(text: str, default: str = "frame") -> str:
    """A relative path made from ``text`` that cannot leave the folder it is joined to.

    Separators split components; empty, ``.`` and ``..`` components are dropped, characters other than
    letters, digits, ``. _ -`` become ``_`` and leading dots are stripped (no hidden or parent names).
    """
    parts = []
    for part in re.split(r"[/\\]+", text):
        part = re.sub(r"[^\w.\-]", "_", part).lstrip(".")
        if part:
            parts.append(part)
    return "/".join(parts) or default


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's own console warnings (we report failures ourselves, on one line)."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


class ImageSource:
    """Image files in order. ``strict``: an unreadable file is an error (a single image given by name)."""

    live = False
    kind = "images"

    def __init__(
        self, paths: list[Path], names: list[str], spec: str, strict: bool = False, exif: bool = False
    ) -> None:
        self.paths, self.names, self.spec, self.strict, self.exif = paths, names, spec, strict, exif
        self.total: int | None = len(paths)
        self.fps: float | None = None
        self.skipped = 0
        self.dropped = 0

    def __iter__(self) -> Iterator[Frame]:
        for path, name in zip(self.paths, self.names):
            try:
                image = read_image(path, self.exif)
            except UserError as exc:
                if self.strict:
                    raise
                log.warning("skipped %s", exc)
                self.skipped += 1
                continue
            yield Frame(image, str(path), 0, name)

    def close(self) -> None:
        pass


def _fps(cap: cv2.VideoCapture) -> float | None:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None


class VideoSource:
    """A video file, every frame in order."""

    live = False
    kind = "video"

    def __init__(self, path: Path) -> None:
        self.spec = str(path)
        with quiet_opencv():
            self.cap = cv2.VideoCapture(str(path))
            if not self.cap.isOpened():
                raise UserError(f"{path}: cannot open as a video (not a video file, unsupported codec or corrupt)")
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = count if count > 0 else None
        self.fps = _fps(self.cap)
        self.name = safe_name(path.stem, "video")
        self.skipped = self.dropped = 0

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        with quiet_opencv():
            while True:
                ok, bgr = self.cap.read()
                if not ok:
                    break
                yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.spec, index, self.name)
                index += 1
        if index == 0:
            raise UserError(f"{self.spec}: the video has no readable frames")

    def close(self) -> None:
        self.cap.release()


class LiveSource:
    """A camera or stream read on a background thread that keeps only the newest frame.

    Iterating waits for a frame newer than the last one handed out; frames the consumer was too slow for are
    counted in ``dropped``. The frame ``index`` is the capture's own frame number, so it shows the gaps.
    """

    live = True
    kind = "live"

    def __init__(self, spec: str, target: int | str, timeout_s: float = 10.0) -> None:
        self.spec, self.timeout_s = spec, timeout_s
        with quiet_opencv():
            self.cap = cv2.VideoCapture(target)
            opened = self.cap.isOpened()
        if not opened:
            what = f"camera {target}" if isinstance(target, int) else "the stream"
            raise UserError(f"{spec}: cannot open {what} (no such device, unreachable or unsupported)")
        self.total: int | None = None
        self.fps = _fps(self.cap)
        self.name = safe_name(spec.split("://", 1)[-1], "stream").replace("/", "_") if isinstance(target, str) else spec
        self.skipped = self.dropped = 0
        self._cond = threading.Condition()
        self._latest: tuple[int, np.ndarray] | None = None
        self._read = 0  # frames read by the thread
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name=f"reader-{spec}", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        with quiet_opencv():
            while not self._stop.is_set():
                ok, bgr = self.cap.read()
                with self._cond:
                    if not ok:
                        self._ended = True
                        self._cond.notify_all()
                        return
                    if self._latest is not None:
                        self.dropped += 1  # the consumer never took the previous frame
                    self._latest = (self._read, bgr)
                    self._read += 1
                    self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        deadline = time.monotonic() + self.timeout_s
        handed_out = 0
        while not self._stop.is_set():
            with self._cond:
                # a short timeout keeps Ctrl-C and stop() responsive while waiting
                self._cond.wait_for(lambda: self._latest is not None or self._ended, timeout=0.1)
                item, self._latest = self._latest, None
                ended = self._ended
            if item is None:
                if ended:
                    if handed_out:
                        log.warning(
                            "%s: the source stopped delivering frames after %d (disconnected or ended); finishing",
                            self.spec,
                            self._read,
                        )
                    break
                if time.monotonic() > deadline:
                    if handed_out == 0:
                        raise UserError(f"{self.spec}: opened, but no frame arrived within {self.timeout_s:g} s")
                    log.warning("%s: no frame for %g s (the source seems gone); finishing", self.spec, self.timeout_s)
                    break
                continue
            deadline = time.monotonic() + self.timeout_s  # a stall is measured from the last frame
            handed_out += 1
            index, bgr = item
            yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.spec, index, self.name)
        if handed_out == 0 and not self._stop.is_set():
            raise UserError(f"{self.spec}: opened, but it delivered no frames")

    def stop(self) -> None:
        """Ask the reader and the iteration to end (safe to call from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # never release a capture a blocked read still uses
            self.cap.release()


def _glob_root(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard (names are made relative to it)."""
    parts = Path(pattern).parts
    fixed = parts[: next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))]
    return Path(*fixed) if fixed else Path(".")


def open_source(spec: str, live_timeout_s: float = 10.0, exif: bool = False) -> ImageSource | VideoSource | LiveSource:
    """The source ``spec`` names (see the module docstring); a UserError when it cannot be opened.

    A camera or stream that delivers no frame for ``live_timeout_s`` counts as gone. Still images are taken as
    stored, as datasets and training take them; ``exif`` turns them by their EXIF orientation."""
    camera = _CAMERA.fullmatch(spec)
    if camera:
        return LiveSource(spec, int(camera.group(1)), live_timeout_s)
    if spec.lower().startswith(STREAM_SCHEMES):
        return LiveSource(spec, spec, live_timeout_s)
    path = Path(spec)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise UserError(f"{spec}: the folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return ImageSource(files, [safe_name(str(p.relative_to(path))) for p in files], spec, exif=exif)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSource([path], [safe_name(path.name)], spec, strict=True, exif=exif)
        return VideoSource(path)
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"{spec}: no files match")
        root = _glob_root(spec)
        names = [safe_name(str(p.relative_to(root)) if p.is_relative_to(root) else p.name) for p in files]
        return ImageSource(files, names, spec, exif=exif)
    if path.exists():
        raise UserError(f"{spec}: not a regular file or folder")
    raise UserError(f"{spec}: no such file or folder")
