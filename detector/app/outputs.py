"""What a detection run writes: annotated images or an .mp4, the JSON lines file, and the live window.

Frames arrive as ``Frame`` objects (``image`` (H, W, 3) uint8 RGB) with their ``Detections`` (boxes (D, 4)
float32 xyxy in frame pixels, scores, labels 1..C, category ids, names). The JSON-lines contract, one object
per image or video frame, is ``Detections.to_json``:

    {"source": str, "frame": int, "width": int, "height": int,
     "detections": [{"bbox": [x1, y1, x2, y2], "score": float, "category_id": int, "name": str}, ...]}

with boxes in source pixels rounded to 0.01, scores to 1e-5, and the dataset's own category ids.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2

from detector.app import draw
from detector.app.sources import Frame
from detector.app.video_writer import Mp4Writer
from detector.errors import UserError
from detector.ssd.detections import Detections

log = logging.getLogger(__name__)


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused if it resolves outside ``folder`` (e.g. through a symbolic link)."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"{path}: output would be written outside --output-dir {folder}")
    return path


class Outputs:
    """Annotated images / video under ``output_dir``, the JSON lines file ``save_json`` and the window (``show``)
    for the frames of ``source`` (an ``open_source`` result); ``close()`` finalises all of them.

    For image sources each annotated image keeps its source-relative name; for videos, cameras and streams
    the frames go to ``output_dir/NAME.mp4`` at the source's frame rate (30 fps when unknown).
    """

    def __init__(self, source, output_dir: str | Path | None = None, save_json: str | Path | None = None,
                 show: bool = False) -> None:  # fmt: skip
        self.output_dir = Path(output_dir) if output_dir else None
        self.show = show
        self.video = None
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if source.kind != "images":
                fps = source.fps or 30.0
                if source.fps is None:
                    log.warning("%s: frame rate unknown; the saved video plays at 30 fps", source.spec)
                self.video = Mp4Writer(inside(self.output_dir, f"{source.name}.mp4"), fps)
        self.json = None
        if save_json:
            Path(save_json).parent.mkdir(parents=True, exist_ok=True)
            self.json = open(save_json, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.wants_drawing = self.output_dir is not None or self.show

    def write(self, frame: Frame, det: Detections, fps: float) -> bool:
        """Record one frame and its detections; False when the user closed the window (q, Esc)."""
        if self.json is not None:
            self.json.write(json.dumps(det.to_json()) + "\n")
            self.json.flush()
        if not self.wants_drawing:
            return True
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        draw.draw_detections(bgr, det.boxes, det.scores, det.labels, det.names)
        if self.video is not None:
            self.video.write(bgr)
        elif self.output_dir is not None:
            path = inside(self.output_dir, frame.name)
            if path.resolve() == Path(frame.source).resolve():
                raise UserError(f"{path}: --output-dir would overwrite the source image; choose another folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), bgr):
                raise UserError(f"{path}: cannot write the annotated image")
        return draw.show(draw.draw_fps(bgr, fps)) if self.show else True

    def close(self) -> list[str]:
        """Finalise everything; returns a description of each file written (the .mp4, the JSON lines)."""
        written = []
        if self.video is not None and self.video.close() is not None:
            written.append(f"{self.video.path} ({self.video.frames} frames at {self.video.fps:g} fps)")
        if self.json is not None:
            self.json.close()
            written.append(self.json.name)
        if self.show:
            draw.close_window()
        return written
