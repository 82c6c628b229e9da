"""Generate the synthetic COCO-format shapes dataset (and optionally a video) used by the demo and tests.

python tools/make_synthetic.py --out runs/demo/data [--train 2000 --val 300 --seed 0] [--video clip.mp4]
python tools/make_synthetic.py --out runs/b/data --classes circle square triangle star hexagon --background tiles

Shape kinds (fixed COCO category ids): circle 3, square 7, triangle 11, cross 12, star 16, ring 20, hexagon 23,
arrow 27. The defaults (the demo's five kinds on the demo background) make the demo dataset.
"""

from __future__ import annotations

import argparse
import logging

from detector import cli
from detector.data.synthetic import BACKGROUNDS, KIND_IDS, generate, write_video

log = logging.getLogger("make_synthetic")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="dataset folder (COCO 2017 layout)")
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--val", type=int, default=300, help="validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=int, default=160, help="smallest image side")
    p.add_argument("--max-size", type=int, default=320, help="largest image side")
    p.add_argument(
        "--classes", nargs="+", choices=list(KIND_IDS), metavar="NAME", help="shape kinds to draw (default: the demo's)"
    )
    p.add_argument("--background", choices=BACKGROUNDS, default="demo", help="background style (default: demo)")
    p.add_argument("--video", help="also write an .mp4 of moving shapes here")
    p.add_argument("--video-frames", type=int, default=150)
    args = p.parse_args()
    cli.setup_logging()
    if args.classes is not None and len(set(args.classes)) != len(args.classes):
        p.error("--classes: each name once")
    size_range = (args.min_size, args.max_size)
    out = generate(args.out, args.train, args.val, args.seed, size_range, args.classes, args.background)
    kinds = ", ".join(args.classes) if args.classes else "demo classes"
    log.info("wrote %d+%d images (%s; %s background) under %s", args.train, args.val, kinds, args.background, out)
    if args.video:
        write_video(args.video, args.video_frames, seed=args.seed)
        log.info("wrote %s (%d frames)", args.video, args.video_frames)
    return 0


if __name__ == "__main__":
    cli.run(main)
