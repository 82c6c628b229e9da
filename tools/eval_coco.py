"""COCO box evaluation with pycocotools: run a checkpoint on a dataset, or score an existing results file.

    python tools/eval_coco.py --weights runs/v3/best.pt --data-root COCO [--out-dir DIR]
    python tools/eval_coco.py --weights ckpt.pt --val-json ann.json --val-images images/
    python tools/eval_coco.py --detections results.json --gt ann.json

Prints the 12 standard COCO numbers and a per-class AP table; writes DIR/metrics.json, DIR/detections.json
(COCO results format, usable for a test-dev submission) and DIR/pr_curve.png.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from torch.utils.data import DataLoader

from detector import build, cli
from detector.build import data_files
from detector.config import DataConfig
from detector.data.dataset import CocoDetection, collate
from detector.data.transforms import build_transform
from detector.deploy.torch_runtime import resolve_device
from detector.errors import UserError
from detector.evaluation.coco_eval import evaluate, load_coco
from detector.evaluation.predict import predict_coco
from detector.evaluation.report import plot_precision_recall, summary_lines
from detector.ssd.detections import LabelMap

log = logging.getLogger("eval_coco")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint to run")
    p.add_argument("--data-root", help="COCO 2017 layout; val2017 is evaluated")
    p.add_argument("--val-json", help="annotation file to evaluate on")
    p.add_argument("--val-images", help="its image folder")
    p.add_argument("--detections", help="an existing COCO results JSON to score (with --gt)")
    p.add_argument("--gt", help="ground-truth annotation file for --detections")
    p.add_argument("--out-dir", default="runs/eval", help="where metrics.json, detections.json, pr_curve.png go")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    cli.setup_logging()
    out = Path(args.out_dir)
    model_info = None
    if args.detections:
        if not args.gt:
            raise UserError("--detections needs --gt ANN.json")
        gt = load_coco(args.gt)
        try:
            detections = json.loads(Path(args.detections).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{args.detections}: cannot read detections: {exc}") from None
        if not isinstance(detections, list):
            raise UserError(f"{args.detections}: expected a JSON list of COCO results")
    elif args.weights:
        model, post, categories, cfg = build.load_detector(args.weights)
        data = DataConfig(
            data_root=args.data_root or "", val_json=args.val_json or "", val_images=args.val_images or ""
        )
        ann, images = data_files(data, "val")
        device = resolve_device(args.device)
        dataset = CocoDetection(ann, images, build_transform(cfg.model.image_size))
        if [c["id"] for c in dataset.categories] != [c["id"] for c in categories]:
            log.warning("the dataset's category ids differ from the checkpoint's; results use the checkpoint's")
        loader = DataLoader(dataset, args.batch_size, num_workers=args.workers, collate_fn=collate)
        detections = predict_coco(model.to(device), post, loader, LabelMap(categories), device)
        gt = load_coco(ann)
        model_info = {
            "backbone": cfg.model.backbone,
            "width": cfg.model.width,
            "reduced_tail": cfg.model.reduced_tail,
            "layout": cfg.model.layout,
        }
    else:
        raise UserError("give --weights CKPT with a dataset, or --detections FILE --gt ANN.json")
    metrics = evaluate(gt, detections)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detections.json").write_text(json.dumps(detections))
    precision = metrics.pop("precision", None)
    if precision is not None:
        plot_precision_recall(precision, out / "pr_curve.png")
    record = dict(metrics)
    if model_info:
        record["model"] = model_info
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    print("\n".join(summary_lines(metrics)))
    print(f"wrote {out / 'metrics.json'}, {out / 'detections.json'}, {out / 'pr_curve.png'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
