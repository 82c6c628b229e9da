"""COCO box evaluation with pycocotools: run a checkpoint on a dataset, or score an existing results file.

    python tools/eval_coco.py --weights runs/v3/best.pt --data-root COCO [--output-dir DIR]
    python tools/eval_coco.py --weights ckpt.pt --val-json ann.json --val-images images/
    python tools/eval_coco.py --detections results.json --gt ann.json

Prints the 12 standard COCO numbers and a per-class AP table; writes DIR/metrics.json, DIR/detections.json
(COCO results format, usable for a test-dev submission) and DIR/pr_curve.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector import build, cli
from detector.config import DataConfig
from detector.errors import UserError
from detector.evaluation.report import summary_lines
from detector.evaluation.run import evaluate_detections_file, evaluate_model, write_results
from detector.inference.device import resolve_device
from detector.weights import catalog
from detector.weights.resolve import load_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help=f"checkpoint to run, or a name: {', '.join(catalog.detector_names())}")
    p.add_argument("--data-root", help="COCO 2017 layout; val2017 is evaluated")
    p.add_argument("--val-json", help="annotation file to evaluate on")
    p.add_argument("--val-images", help="its image folder")
    p.add_argument("--detections", help="an existing COCO results JSON to score (with --gt)")
    p.add_argument("--gt", help="ground-truth annotation file for --detections")
    p.add_argument(
        "--output-dir", metavar="DIR", default="runs/eval", help="where metrics.json, detections.json, pr_curve.png go"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    cli.setup_logging()
    if args.detections:
        if not args.gt:
            raise UserError("--detections needs --gt ANN.json")
        result = evaluate_detections_file(args.detections, args.gt)
    elif args.weights:
        device = resolve_device(args.device)
        loaded = load_model(args.weights)
        data = DataConfig(data_root=args.data_root or "", val_json=args.val_json or "", val_images=args.val_images
                          or "", exif_orientation=loaded.config.data.exif_orientation)  # as trained  # fmt: skip
        dataset = build.build_eval_dataset(loaded.config, data)
        result = evaluate_model(loaded, dataset, device, args.batch_size, args.workers)
        m = loaded.config.model  # what tools/table6.py --map reads to place the result in its row
        result.model = {"backbone": m.backbone, "width": m.width, "reduced_tail": m.reduced_tail, "layout": m.layout}
    else:
        raise UserError("give --weights CKPT with a dataset, or --detections FILE --gt ANN.json")
    write_results(result, args.output_dir)
    out = Path(args.output_dir)
    print("\n".join(summary_lines(result.metrics)))
    print(f"wrote {out / 'metrics.json'}, {out / 'detections.json'}, {out / 'pr_curve.png'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
