"""Inference latency of our paths side by side with torchvision's ssdlite320_mobilenet_v3_large, on this CPU.

    python tools/benchmark.py [--weights CKPT] [--threads 1,all] [--batches 1,8] [--fresh-init] [--quick] [--json]

Input: decoded 640x480 uint8 RGB frames (synthetic), so pre-processing (resize to 320x320, to float) is
timed too. Paths, each split into pre-processing, model and post-processing plus the whole call (e2e):

- torchvision e2e: its full ``model(list_of_images)`` call; torchvision split: the same steps one by one
  (its "model" column is backbone + head alone);
- ours, torchvision weights: torchvision's random weights converted (detector.weights.torchvision_ssdlite) into
  our model, our eager PyTorch path (BatchNorm folded, channels-last) with torchvision's post-processing settings;
- ours eager / ONNX Runtime fp32 (raw outputs + our PostProcessor) / ONNX Runtime fp32 with NMS in the graph
  (tools/export.py --nms) / ONNX Runtime int8 / with OpenVINO installed ('.[openvino]'), OpenVINO f32, bf16
  (on CPUs with it) and OpenVINO's own int8 (NNCF): the model of --weights, by default the paper's V3†
  (Table 6) with random weights. All paths are timed interleaved, in one process.

Every path uses score threshold 0.001 (torchvision's). The random weights get BatchNorm statistics measured
on synthetic frames, as a trained network's are (detector.paper.latency.calibrate_batchnorm): activations keep
unit scale, scores spread (softmax 0.0004-0.09) and boxes move off their anchors, and almost every (anchor,
class) pair passes the threshold: the heavy case for post-processing, on both sides. --fresh-init keeps the
weights as initialised instead: activations then vanish, every torchvision score is exactly 1/91 and every box
its anchor (the tie case). Times are medians in milliseconds per call (a batch); x tv is e2e over torchvision's
e2e at the same threads and batch. int8 is calibrated on synthetic frames (its speed, not its accuracy, is
measured). The targets (detector.paper.benchmark_report.TARGETS) are checked at 1 thread, batch 1.
--json prints the results as JSON on stdout (the table then goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import onnxruntime
import torch

from detector import cli
from detector.paper.benchmark_report import all_targets, json_report, targets_text, timing_table
from detector.paper.inference_benchmark import SCORE_THRESH, run_benchmark
from detector.paper.table6 import REFERENCE_ROW


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help=f"checkpoint to time (default: the {REFERENCE_ROW} paper model, random)")
    parser.add_argument("--threads", default="1,all", help="comma-separated thread counts; all = every core")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per measurement (median)")
    parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds per (threads, batch) configuration before fewer repeats (default 20)",
    )
    parser.add_argument(
        "--fresh-init", action="store_true", help="random weights as initialised (no BatchNorm statistics): tied scores"
    )
    parser.add_argument("--val-data", metavar="ROOT", help="COCO-layout root (annotations/instances_val2017.json, "
                        "val2017/, train2017/): the AP of each of our runtimes on it, and int8 calibrated on its "
                        "training images (e.g. runs/demo/data with --weights runs/demo/train/best.pt)")  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="also the resident memory of each runtime, each in "
                        "a fresh process (Linux)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 thread, batch 1, 3 repeats (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout, the table on stderr")
    args = parser.parse_args()
    try:
        args.thread_list = [os.cpu_count() or 1 if t == "all" else int(t) for t in args.threads.split(",")]
        args.batch_list = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error("--threads and --batches take comma-separated numbers (and 'all' for threads)")
    if args.quick:
        args.thread_list, args.batch_list, args.repeats = [1], [1], 3
    args.thread_list = list(dict.fromkeys(args.thread_list))
    if min(args.thread_list + args.batch_list) < 1 or args.repeats < 1:
        parser.error("threads, batches and --repeats must be positive")
    return args


def runtime_versions() -> dict[str, str]:
    try:
        import openvino

        return {"openvino": openvino.__version__.split("-")[0]}
    except ImportError:
        return {}


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    a = args
    rows, name, ap, resident = run_benchmark(a.weights, a.thread_list, a.batch_list, a.repeats, a.budget,
                                             a.fresh_init, a.quick, a.val_data, a.memory)  # fmt: skip
    found = all_targets(rows, ap, resident)
    label = name + (", weights as initialised" if args.fresh_init else "")
    text = timing_table(rows, label) + ("\n" + targets_text(found) if found else "")
    weights = "as initialised" if args.fresh_init else "BatchNorm statistics from synthetic frames"
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, **runtime_versions()}
    report = json_report(rows, name, weights, SCORE_THRESH, versions, ap=ap, resident=resident)
    stream = sys.stderr if args.json else sys.stdout
    if ap:
        text += "\nAP on " + args.val_data + ": " + ", ".join(f"{path} {value:.4f}" for path, value in ap.items())
    if resident:
        text += "\nresident MB (VmRSS / peak): " + ", ".join(f"{p} {m['VmRSS']:.0f} / {m['VmHWM']:.0f}"
                                                           for p, m in resident.items())  # fmt: skip
    print(text, file=stream)
    print(f"load average during the run: {report['load_average']}", file=stream)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)
