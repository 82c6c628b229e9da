"""Inference latency of our paths side by side with torchvision's ssdlite320_mobilenet_v3_large, on this CPU.

    python tools/benchmark.py [--weights CKPT] [--threads 1,all] [--batches 1,8] [--fresh-init] [--quick] [--json]

Input: decoded 640x480 uint8 RGB frames (synthetic), so pre-processing (resize to 320x320, to float) is
timed too. Paths, each split into pre-processing, model and post-processing plus the whole call (e2e):

- torchvision e2e: its full ``model(list_of_images)`` call; torchvision split: the same steps one by one
  (its "model" column is backbone + head alone);
- ours, torchvision weights: torchvision's random weights converted (detector.torchvision_ssdlite) into our
  model, our eager PyTorch path (BatchNorm folded, channels-last) with torchvision's post-processing settings;
- ours eager / ONNX Runtime fp32 (raw outputs + our PostProcessor) / ONNX Runtime fp32 with NMS in the graph
  (tools/export.py --nms) / ONNX Runtime int8: the model of --weights, by default the paper's V3† (Table 6)
  with random weights.

Every path uses score threshold 0.001 (torchvision's). The random weights get BatchNorm statistics measured
on synthetic frames, as a trained network's are (detector.latency.calibrate_batchnorm): activations keep unit
scale, scores spread (softmax 0.0004-0.09) and boxes move off their anchors, and almost every (anchor, class)
pair passes the threshold: the heavy case for post-processing, on both sides. --fresh-init keeps the weights
as initialised instead: activations then vanish, every torchvision score is exactly 1/91 and every box its
anchor (the tie case). Times are medians in milliseconds per call (a batch); x tv is e2e over torchvision's e2e at
the same threads and batch. int8 is calibrated on synthetic frames (its speed, not its accuracy, is measured).
--json prints the results as JSON on stdout (the table then goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import cv2
import onnx
import onnxruntime
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from detector import build, cli
from detector.build import build_model, build_postprocessor
from detector.config import Config, LossConfig, PostprocessConfig
from detector.data.image_io import preprocess
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.onnx_export import append_nms, export_raw, metadata, save
from detector.deploy.onnx_runtime import OnnxDetector
from detector.deploy.quantize import ImageCalibration, quantize_raw
from detector.deploy.torch_runtime import Detector
from detector.paper.latency import (
    Timing,
    calibrate_batchnorm,
    detector_call,
    measure,
    synthetic_frames,
    torchvision_calls,
    torchvision_images,
)
from detector.paper.table6 import REFERENCE_ROW, row_named
from detector.paper.torchvision_ssdlite import TORCHVISION_CONFIG, coco_categories, convert_state_dict

log = logging.getLogger("benchmark")
SCORE_THRESH = 0.001  # torchvision's


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


def our_model(weights: str | None):
    """(model, post-processor with threshold 0.001, categories, Config, name) of --weights or the V3† model."""
    if weights:
        model, post, categories, cfg = build.load_detector(weights)
        post.score_thresh = SCORE_THRESH
        return model, post, categories, cfg, Path(weights).name
    cfg = Config(
        model=row_named(REFERENCE_ROW).model_config(),
        loss=LossConfig(kind="focal"),
        postprocess=PostprocessConfig(score_thresh=SCORE_THRESH),
    )
    model = build_model(cfg.model).eval()
    return model, build_postprocessor(cfg, model.anchors), coco_categories(), cfg, f"{REFERENCE_ROW} (paper)"


def onnx_files(model, post, categories, cfg, tmp: Path, calib_count: int) -> dict[str, Path]:
    """fp32 raw, fp32 with NMS in the graph, and int8 raw ONNX files (dynamic batch) of ``model``."""
    raw = tmp / "raw.onnx"
    export_raw(model, post, raw, dynamic_batch=True)
    files = {"fp32": tmp / "fp32.onnx", "fp32 nms": tmp / "fp32.nms.onnx", "int8": tmp / "int8.onnx"}
    save(onnx.load(str(raw)), files["fp32"], metadata(cfg, post, categories, "raw", "fp32", "benchmark"))
    save(append_nms(onnx.load(str(raw)), post, True), files["fp32 nms"],
         metadata(cfg, post, categories, "nms", "fp32", "benchmark"))  # fmt: skip
    calib = []
    for i, frame in enumerate(synthetic_frames(calib_count, seed=1)):
        calib.append(tmp / f"calib{i}.png")
        cv2.imwrite(str(calib[-1]), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    quantize_raw(raw, tmp / "raw.int8.onnx", ImageCalibration(calib, cfg.model.image_size))
    save(onnx.load(str(tmp / "raw.int8.onnx")), files["int8"],
         metadata(cfg, post, categories, "raw", "int8", "benchmark"))  # fmt: skip
    return files


def targets(rows: list[Timing]) -> dict[str, dict]:
    """The issue's targets at 1 thread, batch 1 (skipped when that configuration was not run)."""
    at = {r.path: r.ms for r in rows if r.threads == 1 and r.batch == 1}
    if not at:
        return {}

    def entry(value: float, goal: float, higher_is_better: bool = False) -> dict:
        met = value >= goal if higher_is_better else value <= goal
        return {"value": round(value, 3), "goal": goal, "met": met}

    tv_e2e = at["torchvision e2e"]["e2e"]
    return {
        "post_speedup_same_settings": entry(
            at["torchvision split"]["post"] / at["ours, tv weights, eager"]["post"], 10.0, True
        ),
        "post_speedup_ours_model": entry(at["torchvision split"]["post"] / at["ours eager"]["post"], 10.0, True),
        "onnx_e2e_over_tv_e2e": entry(at["ours onnxruntime fp32"]["e2e"] / tv_e2e, 0.3),
        "eager_e2e_over_tv_e2e": entry(at["ours eager"]["e2e"] / tv_e2e, 0.6),
        "int8_model_over_fp32_model": entry(
            at["ours onnxruntime int8"]["model"] / at["ours onnxruntime fp32"]["model"], 0.6
        ),
        "int8_e2e_over_fp32_e2e": entry(at["ours onnxruntime int8"]["e2e"] / at["ours onnxruntime fp32"]["e2e"], 0.6),
    }


def table(rows: list[Timing], name: str) -> str:
    lines = []
    for threads, batch in dict.fromkeys((r.threads, r.batch) for r in rows):
        group = [r for r in rows if (r.threads, r.batch) == (threads, batch)]
        tv = next(r.ms["e2e"] for r in group if r.path == "torchvision e2e")
        lines.append(f"\nthreads {threads}, batch {batch} (ms per call; our model: {name})")
        lines.append(
            f"{'path':33s} {'pre':>7s} {'model':>7s} {'post':>7s} {'e2e':>8s} {'e2e/img':>8s} {'x tv':>6s} {'reps':>4s}"
        )
        for r in group:
            cells = [f"{r.ms[k]:7.1f}" if k in r.ms else f"{'-':>7s}" for k in ("pre", "model", "post")]
            lines.append(
                f"{r.path:33s} {' '.join(cells)} {r.ms['e2e']:8.1f} {r.ms['e2e'] / batch:8.1f} "
                f"{r.ms['e2e'] / tv:6.2f} {r.repeats:4d}"
            )
    return "\n".join(lines)


def describe_targets(found: dict[str, dict]) -> str:
    lines = ["\ntargets (1 thread, batch 1):"]
    for key, t in found.items():
        relation = ">=" if key.startswith("post_speedup") else "<="
        lines.append(f"  {key:30s} {t['value']:8.3f} (goal {relation} {t['goal']}) {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    torch.manual_seed(0)
    frames = synthetic_frames(max(args.batch_list))
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    stats_frames = synthetic_frames(8, seed=2)  # BatchNorm statistics (detector.latency.calibrate_batchnorm)
    if not args.fresh_init:
        images = torchvision_images(stats_frames)
        calibrate_batchnorm(tv, lambda: tv.head(list(tv.backbone(tv.transform(images)[0].tensors).values())))
    tv_ours = build_model(TORCHVISION_CONFIG.model, init=False)
    tv_ours.load_state_dict(convert_state_dict(tv.state_dict(), tv_ours))
    tv_post = build_postprocessor(TORCHVISION_CONFIG, tv_ours.anchors)
    model, post, categories, cfg, name = our_model(args.weights)
    if not args.weights and not args.fresh_init:
        calibrate_batchnorm(model, lambda: model(preprocess(stats_frames, model.image_size)))
    rows: list[Timing] = []
    with tempfile.TemporaryDirectory() as tmp:
        log.info("exporting and quantising %s", name)
        files = onnx_files(model, post, categories, cfg, Path(tmp), 2 if args.quick else 16)
        for threads in args.thread_list:
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
            paths = {
                "ours, tv weights, eager": Detector(
                    fuse_for_inference(tv_ours, True), tv_post, coco_categories(), TORCHVISION_CONFIG
                ),
                "ours eager": Detector(fuse_for_inference(model, True), post, categories, cfg),
                "ours onnxruntime fp32": OnnxDetector(files["fp32"], threads=threads),
                "ours onnxruntime fp32, NMS graph": OnnxDetector(files["fp32 nms"], threads=threads),
                "ours onnxruntime int8": OnnxDetector(files["int8"], threads=threads),
            }
            for batch in args.batch_list:
                batch_frames = frames[:batch]
                full, split = torchvision_calls(tv, batch_frames)
                calls = {"torchvision e2e": full, "torchvision split": split}
                calls.update({path: detector_call(det, batch_frames) for path, det in paths.items()})
                timed, rounds = measure(calls, args.repeats, 1 if args.quick else 2, args.budget)
                for path, ms in timed.items():
                    rows.append(Timing(path, threads, batch, rounds, ms))
                    log.info("threads %d batch %d %-33s e2e %.1f ms", threads, batch, path, ms["e2e"])
    found = targets(rows)
    text = table(rows, name + (", weights as initialised" if args.fresh_init else "")) + (
        "\n" + describe_targets(found) if found else ""
    )
    report = {
        "model": name,
        "frame": [480, 640],
        "score_thresh": SCORE_THRESH,
        "weights": "as initialised" if args.fresh_init else "BatchNorm statistics from synthetic frames",
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "results": [
            {
                "path": r.path,
                "threads": r.threads,
                "batch": r.batch,
                "repeats": r.repeats,
                **{f"{k}_ms": round(v, 3) for k, v in r.ms.items()},
                "ratio_to_torchvision_e2e": round(
                    r.ms["e2e"]
                    / next(
                        t.ms["e2e"]
                        for t in rows
                        if (t.path, t.threads, t.batch) == ("torchvision e2e", r.threads, r.batch)
                    ),
                    4,
                ),
            }
            for r in rows
        ],
        "targets": found,
    }
    print(text, file=sys.stderr if args.json else sys.stdout)
    print(f"load average during the run: {report['load_average']}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)
