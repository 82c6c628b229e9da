"""tools/detect.py's loop on a 640x480 video, stages overlapped against one after another, side by side.

Overlapped is the default loop (``detector.app.run``): pre-processing on the reader thread, the engine in the
main thread, post-processing on the writer thread. The baseline runs pre-processing, engine and post-processing
one after another in the main thread (``overlap=False``; reading and writing stay on their threads in both).
Both write what ``make demo`` writes (an annotated .mp4 and the JSON lines), with detect.py's default settings:
the default runtime (``auto``, unless --runtime), --conf 0.3, all cores. The modes alternate for ``--rounds``
rounds; the median frames per second of each are compared with the target ``overlapped_fps_over_serial`` >= 1.3,
and the JSON lines of the two must be identical (same frames, same order, same detections).

Model: --weights CKPT, or the paper's V3† (Table 6's reference row) with random weights and BatchNorm statistics
from synthetic frames.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.inference import paper_model
from detector import checkpoint
from detector.app import api
from detector.app.run import run_detection
from detector.app.sources import open_source
from detector.config import to_dict
from detector.data.synthetic import synthetic_frames
from detector.deploy.runtimes import CHOICES
from detector.errors import UserError
from detector.inference.timing import machine, machine_line

TARGET = 1.3  # issue goal: overlapped FPS at least 1.3x one stage after another


def write_video(path: Path, frames: int, fps: float = 30.0) -> Path:
    """A 640x480 mp4 of ``frames`` frames cycling through 16 smooth random images."""
    images = synthetic_frames(16, seed=7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        writer.write(cv2.cvtColor(images[i % len(images)], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def paper_checkpoint(path: Path) -> Path:
    loaded = paper_model()
    payload = {"model": loaded.model.state_dict(), "config": to_dict(loaded.config), "categories": loaded.categories}
    checkpoint.save(path, payload)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="checkpoint or exported file (default: the paper's V3†, random weights)")
    p.add_argument("--runtime", choices=CHOICES, help="default: detect.py's (auto on the CPU)")
    p.add_argument("--threads", type=int, help="CPU threads of the engine (default: all cores, as detect.py)")
    p.add_argument("--frames", type=int, default=300, help="frames of the video (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternating (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout, the report on stderr")


def main(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.rounds < 1:
        raise UserError("--frames and --rounds must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = write_video(folder / "clip.mp4", args.frames)
        weights = args.weights or paper_checkpoint(folder / "paper_v3.pt")
        detector = api.load(weights, runtime=args.runtime, threads=args.threads)
        fps: dict[str, list[float]] = {"serial": [], "overlapped": []}
        lines: dict[str, str] = {}
        for _ in range(args.rounds):
            for mode in fps:
                out = folder / mode
                start = time.perf_counter()
                run = run_detection(detector, open_source(str(video)), out, out / "detections.jsonl",
                                    progress=False, overlap=mode == "overlapped")  # fmt: skip
                fps[mode].append(run.frames / (time.perf_counter() - start))
                lines[mode] = (out / "detections.jsonl").read_text()
    medians = {mode: statistics.median(values) for mode, values in fps.items()}
    ratio = medians["overlapped"] / medians["serial"]
    identical = lines["overlapped"] == lines["serial"]
    report = {"model": str(args.weights or "paper V3† (random)"), "runtime": detector.runtime,
              "frames": args.frames, "rounds": args.rounds, "fps": fps, "median_fps": medians,
              "overlapped_fps_over_serial": ratio, "target": TARGET, "identical_json_lines": identical,
              "machine": machine()}  # fmt: skip
    text = "\n".join([
        f"video 640x480, {args.frames} frames, {report['model']} on {detector.runtime}, --conf {detector.conf}: "
        f"annotated .mp4 + JSON lines",
        *(f"  {mode:10s} {medians[mode]:6.1f} FPS (median of {', '.join(f'{v:.1f}' for v in fps[mode])})"
          for mode in fps),
        f"target overlapped_fps_over_serial >= {TARGET}: {ratio:.2f} {'met' if ratio >= TARGET else 'MISSED'}",
        f"JSON lines of the two modes: {'identical' if identical else 'DIFFERENT'}",
        machine_line(report["machine"]),
    ])  # fmt: skip
    print(text, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0 if identical else 1
