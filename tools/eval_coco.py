"""COCO box evaluation with pycocotools: run a checkpoint on a dataset, or score an existing results file.

    python tools/eval_coco.py --weights runs/v3/best.pt --data-root COCO [--output-dir DIR]
    python tools/eval_coco.py --weights paper-v3-large-coco --data-root COCO --split minival2014
    python tools/eval_coco.py --weights ckpt.pt --val-json ann.json --val-images images/
    python tools/eval_coco.py --detections results.json --gt ann.json
    python tools/eval_coco.py --data-root COCO --report-overlap

--split minival2014 evaluates TF's COCO 2014 minival (8,059 images, found in COCO/train2017 and COCO/val2017):
the split of the paper's Table 6 and the TF zoo's figures, whose models were trained on the rest of COCO 2014,
including about 80 % of val2017 (--report-overlap counts it from your files). Use it for TF-trained weights;
keep val2017 for models trained here.

On the CPU the model runs on the fastest float32 runtime installed for it (PyTorch, or ONNX Runtime or OpenVINO on
an ONNX export of the checkpoint: measured once, cached, and named in one log line); --runtime torch forces PyTorch.
Prints the 12 standard COCO numbers and a per-class AP table; writes DIR/metrics.json, DIR/detections.json
(COCO results format, usable for a test-dev submission) and DIR/pr_curve.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector import build, cli
from detector.build import LoadedModel
from detector.config import DataConfig
from detector.data.minival import SPLITS, minival_dataset_files, val2017_overlap
from detector.deploy import runtime_choice, runtimes
from detector.errors import UserError
from detector.evaluation.report import summary_lines
from detector.evaluation.run import evaluate_detections_file, evaluate_model, write_results
from detector.inference.runner import Runner
from detector.weights import catalog
from detector.weights.resolve import load_model


def overlap_line(counts: dict[str, int]) -> str:
    share = counts["in_tf_training"] / max(counts["val2017"], 1)
    return (f"val2017: {counts['val2017']:,} images; {counts['in_minival']:,} in TF's minival, "
            f"{counts['in_tf_training']:,} ({share:.1%}) in the TF zoo models' training data (COCO 2014 train + val "
            f"minus minival): a val2017 figure of TF-trained weights is biased upward")  # fmt: skip


def open_runner(args: argparse.Namespace, loaded: LoadedModel) -> Runner:
    """The checkpoint (``loaded``) on the runtime of --runtime; the fastest float32 one on the CPU unless told
    (bf16 would move the metrics)."""
    if (args.runtime or ("auto" if args.device == "cpu" else "torch")) == "torch":
        return runtimes.torch_runner(loaded, args.device)
    if args.device != "cpu":
        raise UserError("--runtime auto measures the CPU runtimes; with --device other than cpu, use --runtime torch")
    return runtime_choice.choose(args.weights, fp32_only=True).open()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help=f"checkpoint to run, or a name: {', '.join(catalog.detector_names())}")
    p.add_argument("--data-root", help="COCO 2017 layout; --split says what is evaluated")
    p.add_argument("--split", choices=SPLITS, default="val2017",
                   help="with --data-root: val2017 (default) or TF's COCO 2014 minival (Table 6's)")  # fmt: skip
    p.add_argument("--allow-partial", action="store_true",
                   help="--split minival2014: evaluate the minival images present instead of stopping")  # fmt: skip
    p.add_argument("--report-overlap", action="store_true",
                   help="with --data-root: how much of val2017 was in the TF models' training data")  # fmt: skip
    p.add_argument("--val-json", help="annotation file to evaluate on")
    p.add_argument("--val-images", help="its image folder")
    p.add_argument("--detections", help="an existing COCO results JSON to score (with --gt)")
    p.add_argument("--gt", help="ground-truth annotation file for --detections")
    p.add_argument(
        "--output-dir", metavar="DIR", default="runs/eval", help="where metrics.json, detections.json, pr_curve.png go"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", choices=("auto", "torch"), help="auto (default on the CPU): the fastest runtime "
                   "computing in float32 (PyTorch, or ONNX Runtime / OpenVINO f32 on an ONNX export of the "
                   "checkpoint), measured once on this CPU and cached; torch: PyTorch")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    cli.setup_logging()
    if args.split != "val2017" and not args.data_root:
        raise UserError(f"--split {args.split} needs --data-root DIR (COCO 2017 layout)")
    if args.report_overlap:
        if not args.data_root:
            raise UserError("--report-overlap needs --data-root DIR (COCO 2017 layout)")
        print(overlap_line(val2017_overlap(args.data_root)))
        if not args.weights:
            return 0
    if args.detections:
        if not args.gt:
            raise UserError("--detections needs --gt ANN.json")
        result = evaluate_detections_file(args.detections, args.gt)
    elif args.weights:
        loaded = load_model(args.weights)
        data = DataConfig(data_root=args.data_root or "", val_json=args.val_json or "", val_images=args.val_images
                          or "", exif_orientation=loaded.config.data.exif_orientation)  # as trained  # fmt: skip
        split = args.val_json or args.split
        if args.split == "minival2014":
            if args.val_json or args.val_images:
                raise UserError("--split minival2014 reads DIR of --data-root; leave out --val-json/--val-images")
            found = minival_dataset_files(args.data_root, args.output_dir, args.allow_partial)
            print(found.describe())
            data.val_json, data.val_images = str(found.ann_file), str(found.image_dir)
            split += " (partial)" if found.missing else ""
        dataset = build.build_eval_dataset(loaded.config, data)
        print(f"evaluating {split}: {len(dataset):,} images")
        runner = open_runner(args, loaded)
        result = evaluate_model(runner, dataset, args.batch_size, args.workers)
        result.split = split
        m = loaded.config.model  # what tools/table6.py --map reads to place the result in its row
        result.model = {"backbone": m.backbone, "width": m.width, "reduced_tail": m.reduced_tail, "layout": m.layout,
                        "padding": m.padding, "resize": loaded.config.data.resize,
                        "weights": loaded.source, "runtime": runner.runtime}  # fmt: skip
    else:
        raise UserError("give --weights CKPT with a dataset, or --detections FILE --gt ANN.json")
    write_results(result, args.output_dir)
    out = Path(args.output_dir)
    print("\n".join(summary_lines(result.metrics)))
    print(f"wrote {out / 'metrics.json'}, {out / 'detections.json'}, {out / 'pr_curve.png'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
