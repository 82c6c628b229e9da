"""Detect objects in images, folders, globs, videos, cameras and streams; show, save and log the detections.

    python tools/detect.py SOURCE [--weights NAME|CKPT|MODEL.onnx] [options]
    python tools/detect.py --video cam0                     # webcam 0 with the default COCO model

SOURCE: an image file, a folder (searched recursively), a quoted glob ("data/**/*.jpg"), a video file, camN
(webcam N) or an rtsp:// / http(s):// stream URL. Files are read in order and every frame is processed (with a
progress bar); cameras and streams are read on a separate thread that keeps only the newest frame, so the
output never lags behind the camera (stale frames are dropped and counted).

--weights takes a name of the weights catalog (fetched once into torch's hub cache), a checkpoint (.pt) or a
file written by tools/export.py (.onnx, .xml, .pte: the file carries its own settings). Without it the default
COCO model, torchvision-coco (torchvision's SSDLite320 MobileNetV3-Large, 21.3 mAP), runs. The same from
Python: detector.load(WEIGHTS, conf=..., classes=...)(image) (detector/app/api.py).

--conf and --classes filter what is drawn and what --save-json writes. --output-dir gets the
annotated images (same relative names as in the source folder), and for videos, cameras and streams an
annotated NAME.mp4 at the source's frame rate. --save-json FILE gets one JSON object per image or frame:
{"source", "frame", "width", "height", "detections": [{"bbox": [x1, y1, x2, y2], "score", "category_id",
"name"}]} with boxes in source pixels and the dataset's category ids. q or Esc in the --show window, end of
file, Ctrl-C or SIGTERM end the run with the video finalised and a summary line (exit status 0 at the end
of the source or on q, 130 after Ctrl-C, 143 after SIGTERM).
"""

from __future__ import annotations

import argparse
import logging

from detector import cli
from detector.app import api, draw
from detector.app.run import run_detection
from detector.app.sources import open_source
from detector.deploy.runtimes import CHOICES
from detector.errors import UserError
from detector.weights import catalog, resolve

log = logging.getLogger("detect")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="image, folder, glob, video file, camN or stream URL")
    parser.add_argument("--video", metavar="SOURCE", help="video file, camN or stream URL (same as SOURCE)")
    parser.add_argument(
        "--weights",
        help=f"name ({', '.join(catalog.detector_names())}), checkpoint (.pt) or exported model (.onnx, .xml, "
        f".pte); default {catalog.DEFAULT_DETECTOR}",
    )
    parser.add_argument("--conf", type=float, default=api.DEFAULT_CONF,
                        help=f"lowest score drawn and saved (default {api.DEFAULT_CONF})")  # fmt: skip
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="keep only these class names")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--half", action="store_true", help="float16 model (GPU only, checkpoints only)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: all cores)")
    parser.add_argument("--runtime", choices=CHOICES, help="inference engine (default on the CPU: auto, the "
                        "fastest of the installed ones for this file, measured once on this CPU and cached; off the "
                        "CPU: torch for checkpoints, onnxruntime for .onnx)")  # fmt: skip
    parser.add_argument("--show", action="store_true", help="live window; q or Esc quits")
    parser.add_argument("--exif", action="store_true", help="turn still images by their EXIF orientation "
                        "(default: as stored, as datasets and training take them)")  # fmt: skip
    parser.add_argument("--output-dir", metavar="DIR", help="folder for annotated images and .mp4 videos")
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


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    if args.show and (problem := draw.display_problem()):
        raise UserError(problem)
    if not args.weights:
        args.weights = catalog.DEFAULT_DETECTOR
        log.info("no --weights: the default COCO model, %s", resolve.describe(args.weights))
    source = open_source(args.source or args.video, args.live_timeout, args.exif)  # a bad source fails first
    try:
        detector = api.load(args.weights, runtime=args.runtime, device=args.device, conf=args.conf,
                            classes=args.classes, threads=args.threads, half=args.half)  # fmt: skip
    except BaseException:
        source.close()
        raise
    run = run_detection(detector, source, args.output_dir, args.save_json, args.show)
    print("\n".join(run.lines))
    return run.exit_code


if __name__ == "__main__":
    cli.run(main)
