"""MP4 writing with ``cv2.VideoWriter`` ('mp4v'), finalised atomically.

Frames go to a hidden ``.NAME.partial.mp4`` next to the target; ``close()`` releases the writer (which writes the
MP4 index, the "moov" atom, without which players cannot open the file) and renames it to the target. So the
target is either absent or a complete, playable file - also after q, end of file, or Ctrl-C, as long as
``close()`` runs (use the writer as a context manager).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from detector.errors import UserError

log = logging.getLogger(__name__)


class Mp4Writer:
    """Write (H, W, 3) uint8 BGR frames of one size to ``path`` at ``fps`` frames per second.

    The size is taken from the first frame. MPEG-4 part 2 needs even sides: odd frames get one black row or
    column at the bottom or right (the picture itself is not scaled).
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (W, H) of the frames given

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (w, h)
            self._writer = cv2.VideoWriter(
                str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w + w % 2, h + h % 2)
            )
            if not self._writer.isOpened():
                self._writer = None
                raise UserError(f"{self.path}: cannot write an MP4 video (no 'mp4v' encoder in this OpenCV?)")
        elif (w, h) != self._size:
            raise UserError(f"{self.path}: frame of {w}x{h} pixels in a video of {self._size[0]}x{self._size[1]}")
        if w % 2 or h % 2:
            frame = cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._writer.write(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> Path | None:
        """Finalise: release and rename into place. Returns the written path (None when no frame came)."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self.partial, self.path)
        log.debug("wrote %s: %d frames at %g fps", self.path, self.frames, self.fps)
        return self.path

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
