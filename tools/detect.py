"""Detect objects in images, folders, globs, videos, cameras and streams; show, save and log the detections.

    python tools/detect.py SOURCE --weights CKPT|MODEL.onnx [options]
    python tools/detect.py --video SOURCE --weights CKPT|MODEL.onnx [options]

SOURCE: an image file, a folder (searched recursively), a quoted glob ("data/**/*.jpg"), a video file, camN
(webcam N) or an rtsp:// / http(s):// stream URL. Files are read in order and every frame is processed (with a
progress bar); cameras and streams are read on a separate thread that keeps only the newest frame, so the
output never lags behind the camera (stale frames are dropped and counted).

--weights takes a checkpoint (.pt) or an ONNX file written by tools/export.py (the file carries its own
settings). --conf and --classes filter what is drawn and what --save-json writes. --save-dir gets the annotated
images (same relative names as in the source folder), and for videos, cameras and streams an annotated NAME.mp4
at the source's frame rate. --save-json FILE gets one JSON object per image or frame:
{"source", "frame", "width", "height", "detections": [{"bbox": [x1, y1, x2, y2], "score", "category_id",
"name"}]} with boxes in source pixels and the dataset's category ids. q or Esc in the --show window, end of
file, Ctrl-C or SIGTERM end the run with the video finalised and a summary line (exit status 0 at the end
of the source or on q, 130 after Ctrl-C, 143 after SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detector import build, cli
from detector.app import draw
from detector.app.sources import Frame, LiveSource, open_source
from detector.app.video_writer import Mp4Writer
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.torch_runtime import Detector, StageTimes, resolve_device
from detector.errors import UserError

log = logging.getLogger("detect")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="image, folder, glob, video file, camN or stream URL")
    parser.add_argument("--video", metavar="SOURCE", help="video file, camN or stream URL (same as SOURCE)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("--conf", type=float, default=0.3, help="lowest score drawn and saved (default 0.3)")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="keep only these class names")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--half", action="store_true", help="float16 model (GPU only, checkpoints only)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: all cores)")
    parser.add_argument("--show", action="store_true", help="live window; q or Esc quits")
    parser.add_argument("--save-dir", help="folder for annotated images and .mp4 videos")
    parser.add_argument("--save-json", metavar="FILE", help="JSON lines file, one object per image or frame")
    parser.add_argument(
        "--live-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a camera or stream silent this long counts as gone: outputs are finalised (default 10)",
    )
    args = parser.parse_args()
    if bool(args.source) == bool(args.video):
        parser.error("give exactly one of SOURCE and --video SOURCE")
    if not 0.0 <= args.conf <= 1.0:
        parser.error("--conf must be in [0, 1]")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def load(args: argparse.Namespace):
    """A Detector (checkpoint, BatchNorm folded) or OnnxDetector (.onnx) with the same call and results."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if Path(args.weights).suffix.lower() == ".onnx":
        try:  # onnx and onnxruntime are the optional "export" extra
            from detector.deploy.onnx_runtime import OnnxDetector
        except ImportError as exc:
            raise UserError(
                f"--weights {args.weights}: running ONNX files needs {exc.name} (pip install '.[export]')"
            ) from None
        if args.half:
            raise UserError("--half applies to checkpoints; an ONNX file runs in the precision it was exported in")
        return OnnxDetector(args.weights, args.device, args.threads)
    model, post, categories, cfg = build.load_detector(args.weights)
    on_cpu = resolve_device(args.device).type == "cpu"
    return Detector(fuse_for_inference(model, channels_last=on_cpu), post, categories, cfg, args.device, args.half)


def class_filter(names: list[str], wanted: list[str] | None) -> np.ndarray | None:
    """Boolean mask over labels 0..C (label k at index k) of the classes kept; None keeps all."""
    if not wanted:
        return None
    unknown = [n for n in wanted if n not in names]
    if unknown:
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        raise UserError(f"--classes: unknown {', '.join(map(repr, unknown))}; this model has: {shown}")
    return np.array([False] + [n in wanted for n in names])


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused if it resolves outside ``folder`` (e.g. through a symbolic link)."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"{path}: output would be written outside --save-dir {folder}")
    return path


def json_record(frame: Frame, det: dict) -> dict:
    h, w = frame.image.shape[:2]
    detections = [
        {
            "bbox": [round(float(v), 2) for v in box],
            "score": round(float(score), 5),
            "category_id": int(cid),
            "name": name,
        }
        for box, score, cid, name in zip(det["boxes"], det["scores"], det["category_ids"], det["names"])
    ]
    return {"source": frame.source, "frame": frame.index, "width": w, "height": h, "detections": detections}


def select(det: dict, conf: float, keep_classes: np.ndarray | None) -> dict:
    keep = det["scores"] >= conf
    if keep_classes is not None:
        keep &= keep_classes[det["labels"]]
    return {k: (v[keep] if isinstance(v, np.ndarray) else [x for x, m in zip(v, keep) if m]) for k, v in det.items()}


class Outputs:
    """Annotated images / video, the JSON lines file and the window; ``close()`` finalises all of them."""

    def __init__(self, args: argparse.Namespace, source) -> None:
        self.save_dir = Path(args.save_dir) if args.save_dir else None
        self.show = args.show
        self.video = None
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            if source.kind != "images":
                fps = source.fps or 30.0
                if source.fps is None:
                    log.warning("%s: frame rate unknown; the saved video plays at 30 fps", source.spec)
                self.video = Mp4Writer(inside(self.save_dir, f"{source.name}.mp4"), fps)
        self.json = None
        if args.save_json:
            Path(args.save_json).parent.mkdir(parents=True, exist_ok=True)
            self.json = open(args.save_json, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.wants_drawing = self.save_dir is not None or self.show

    def write(self, frame: Frame, det: dict, fps: float) -> bool:
        """Record one frame; False when the user closed the window (q, Esc)."""
        if self.json is not None:
            self.json.write(json.dumps(json_record(frame, det)) + "\n")
            self.json.flush()
        if not self.wants_drawing:
            return True
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        draw.draw_detections(bgr, det["boxes"], det["scores"], det["labels"], det["names"])
        if self.video is not None:
            self.video.write(bgr)
        elif self.save_dir is not None:
            path = inside(self.save_dir, frame.name)
            if path.resolve() == Path(frame.source).resolve():
                raise UserError(f"{path}: --save-dir would overwrite the source image; choose another folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), bgr):
                raise UserError(f"{path}: cannot write the annotated image")
        return draw.show(draw.draw_fps(bgr, fps)) if self.show else True

    def close(self) -> list[str]:
        written = []
        if self.video is not None and self.video.close() is not None:
            written.append(f"{self.video.path} ({self.video.frames} frames at {self.video.fps:g} fps)")
        if self.json is not None:
            self.json.close()
            written.append(self.json.name)
        if self.show:
            draw.close_window()
        return written


def summary(frames: int, elapsed: float, read_ms: float, times: StageTimes, source, stopped: str) -> str:
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


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    if args.show and (problem := draw.display_problem()):
        raise UserError(problem)
    detector = load(args)
    keep_classes = class_filter(detector.names, args.classes)
    source = open_source(args.source or args.video, args.live_timeout)
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
        outputs = Outputs(args, source)
        bar = tqdm(total=source.total, unit="frame", desc=Path(source.spec).name or source.spec, disable=source.live)
        if source.live:
            log.info("reading %s; press Ctrl-C%s to stop", source.spec, " or q in the window" if args.show else "")
        frames_iter = iter(source)
        with bar, logging_redirect_tqdm():
            while not stopped:
                t0 = time.perf_counter()
                frame = next(frames_iter, None)
                t1 = time.perf_counter()
                if frame is None:
                    break
                det = select(detector([frame.image])[0], args.conf, keep_classes)
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
    print(summary(frames, elapsed, read_ms, detector.times, source, stopped))
    for item in written:
        print(f"wrote {item}")
    if args.save_dir and source.kind == "images":
        print(f"wrote {frames} annotated images to {args.save_dir}")
    return exit_code


if __name__ == "__main__":
    cli.run(main)
