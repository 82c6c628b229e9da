"""Inference latency: torchvision's ssdlite320_mobilenet_v3_large beside every path of ours, on this CPU.

Input: decoded (480, 640, 3) uint8 RGB synthetic frames, so pre-processing is timed too. Each path turns a
batch of frames into detections and reports its stages: ``pre`` (frames -> model input), ``model``,
``post`` (detections in frame pixels) and ``e2e`` (the whole call). Paths (names in ``benchmarks.report``):
torchvision's full ``model(list_of_images)`` call and the same steps one by one; torchvision's random weights
converted into our model, run eagerly with torchvision's post-processing settings; our model (a checkpoint,
or the paper's V3† with random weights) eagerly (BatchNorm folded, channels-last) and in every installed
runtime: ONNX Runtime fp32 (raw graph + our PostProcessor), fp32 with NMS in the graph and int8; OpenVINO f32,
bf16 and NNCF int8; ExecuTorch XNNPACK fp32 and int8. The files come from the export pipeline. Every path uses
score threshold 0.001 (torchvision's). Unless ``fresh_init``, random weights get BatchNorm statistics measured
on synthetic frames (``calibrate_batchnorm``), as a trained network's are. All paths are timed interleaved
(``detector.inference.timing.interleaved``), in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from benchmarks import report as paths
from benchmarks.memory import resident_mb
from benchmarks.opencv_dnn import OpenCvDnnRunner
from benchmarks.report import Timing
from detector import build, checkpoint
from detector.build import LoadedModel
from detector.config import Config, LossConfig, PostprocessConfig, to_dict
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy import runtimes
from detector.deploy.calibration import calibration_files
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.pipeline import ExportOptions, export
from detector.errors import UserError
from detector.evaluation.detector_accuracy import coco_accuracy
from detector.inference.runner import Runner, TorchRunner
from detector.inference.timing import StageTimes, interleaved, machine_line
from detector.paper.table6 import REFERENCE_ROW, row_named
from detector.weights.resolve import load_model
from detector.weights.torchvision_ssdlite import TORCHVISION_CONFIG, coco_categories, convert_state_dict

log = logging.getLogger(__name__)
SCORE_THRESH = 0.001  # torchvision's


@dataclass
class Settings:
    """What to run: ``weights`` (None: the paper's V3†, random), thread counts, batch sizes, timed rounds, the
    seconds one configuration may take (``budget_s``), ``fresh_init`` (no BatchNorm statistics: tied scores),
    ``quick`` (fewer calibration images, one warm-up round), ``val_data`` (a COCO-layout root: the AP of each
    runtime, int8 calibrated on its training images) and ``memory`` (each runtime's resident set)."""

    weights: str | None = None
    threads: Sequence[int] = (1,)
    batches: Sequence[int] = (1,)
    repeats: int = 15
    budget_s: float = 20.0
    fresh_init: bool = False
    quick: bool = False
    val_data: Path | None = None
    memory: bool = False


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, forward: Callable[[], object]) -> None:
    """Set every BatchNorm's running statistics to those of the activations seen in ``forward()`` (a call
    through ``model``), as a trained network's statistics are: its activations then keep unit scale.

    Fresh random weights leave BatchNorm as the identity and the activations shrink layer by layer (in
    torchvision's SSDLite to 1e-15 at the head, so that every score is exactly 1/91 and every box its
    anchor); timing post-processing on such outputs measures ties, not detections.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calls
        m.train()
    try:
        forward()
    finally:
        for m, (training, momentum) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum


def paper_model(fresh_init: bool = False, score_thresh: float = SCORE_THRESH) -> LoadedModel:
    """The paper's V3† (Table 6) with random weights; BatchNorm statistics from synthetic frames unless
    ``fresh_init``."""
    cfg = Config(model=row_named(REFERENCE_ROW).model_config(), loss=LossConfig(kind="focal"),
                 postprocess=PostprocessConfig(score_thresh=score_thresh))  # fmt: skip
    model = build.build_model(cfg.model).eval()
    if not fresh_init:
        frames = synthetic_frames(8, seed=2)
        calibrate_batchnorm(model, lambda: model(preprocess(frames, model.image_size)))
    post = build.build_postprocessor(cfg, model)
    return LoadedModel(model, post, coco_categories(), cfg, f"{REFERENCE_ROW} (paper)")


def our_model(settings: Settings) -> LoadedModel:
    """``settings.weights`` at score threshold 0.001, or the paper's V3†."""
    if not settings.weights:
        return paper_model(settings.fresh_init)
    loaded = load_model(settings.weights)
    loaded.post.score_thresh = SCORE_THRESH
    return replace(loaded, source=Path(settings.weights).name)


def write_frames(folder: Path, count: int) -> list[Path]:
    """``count`` synthetic frames written as PNG files under ``folder`` (int8 calibration input)."""
    files = []
    for i, frame in enumerate(synthetic_frames(count, seed=1)):
        files.append(folder / f"calib{i}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return files


def exported_files(loaded: LoadedModel, calibration: list[Path], folder: Path) -> dict[str, tuple[Path, str]]:
    """{path name: (file, runtime)} of every installed runtime's file, written by the export pipeline (no
    parity check: random weights tie)."""

    def write(name: str, fmt: str, nms: bool = False, int8: bool = False) -> Path:
        options = ExportOptions(format=fmt, nms=nms, dynamic_batch=fmt != "executorch",
                                calibration=calibration if int8 else None, check=False)  # fmt: skip
        return export(loaded, folder / name, options, say=log.debug).path

    files = {
        paths.ORT_FP32: (write("fp32.onnx", "onnx"), "onnxruntime"),
        paths.ORT_FP32_NMS: (write("fp32.nms.onnx", "onnx", nms=True), "onnxruntime"),
        paths.ORT_INT8: (write("int8.onnx", "onnx", int8=True), "onnxruntime"),
    }
    if runtimes.installed("openvino"):
        files[paths.OV_FP32] = (files[paths.ORT_FP32][0], "openvino")
        if runtimes.installed("openvino-bf16"):
            files[paths.OV_BF16] = (files[paths.ORT_FP32][0], "openvino-bf16")
        files[paths.OV_INT8] = (write("int8.xml", "openvino", int8=True), "openvino")
    if runtimes.installed("executorch"):
        log.info("lowering to ExecuTorch XNNPACK, fp32 and int8 (a minute or more)")
        files[paths.ET_FP32] = (write("fp32.pte", "executorch"), "executorch")
        files[paths.ET_INT8] = (write("int8.pte", "executorch", int8=True), "executorch")
    return files


def runner_call(runner: Runner, frames: list[np.ndarray]) -> Callable[[], dict[str, float]]:
    """A runner on ``frames``: its stages from its own ``times`` (e2e is measured around the call)."""

    def call() -> dict[str, float]:
        runner.times = StageTimes()
        runner(frames)
        t = runner.times
        return {"pre": t.preprocess, "model": t.model, "post": t.postprocess}

    return call


def torchvision_images(frames: list[np.ndarray]) -> list[torch.Tensor]:
    """(H, W, 3) uint8 RGB frames -> the (3, H, W) float tensors in [0, 1] torchvision's detectors take."""
    return [torch.from_numpy(f).permute(2, 0, 1).float().div_(255.0) for f in frames]


def torchvision_calls(tv: torch.nn.Module, frames: list[np.ndarray]) -> tuple[Callable, Callable]:
    """(the full ``tv(images)`` call, the same steps one by one with a stage split) on ``frames``.

    Both include turning the uint8 frames into the float CHW tensors torchvision takes (part of ``pre``).
    """

    @torch.inference_mode()
    def full() -> None:
        tv(torchvision_images(frames))

    @torch.inference_mode()
    def split() -> dict[str, float]:
        t0 = time.perf_counter()
        images = torchvision_images(frames)
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        batch, _ = tv.transform(images)
        t1 = time.perf_counter()
        features = list(tv.backbone(batch.tensors).values())
        head_outputs = tv.head(features)
        anchors = tv.anchor_generator(batch, features)
        t2 = time.perf_counter()
        dets = tv.postprocess_detections(head_outputs, anchors, batch.image_sizes)
        tv.transform.postprocess(dets, batch.image_sizes, original_sizes)
        t3 = time.perf_counter()
        return {"pre": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3}

    return full, split


def torchvision_models(fresh_init: bool) -> tuple[torch.nn.Module, TorchRunner]:
    """torchvision's ssdlite320_mobilenet_v3_large (random weights, BatchNorm statistics from synthetic frames
    unless ``fresh_init``) and the same weights converted into ours, as a runner."""
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    if not fresh_init:
        images = torchvision_images(synthetic_frames(8, seed=2))
        calibrate_batchnorm(tv, lambda: tv.head(list(tv.backbone(tv.transform(images)[0].tensors).values())))
    ours = build.build_model(TORCHVISION_CONFIG.model, init=False)
    ours.load_state_dict(convert_state_dict(tv.state_dict(), ours))
    post = build.build_postprocessor(TORCHVISION_CONFIG, ours)
    return tv, TorchRunner(fuse_for_inference(ours, True), post, coco_categories())


def run_benchmark(settings: Settings) -> tuple[list[Timing], str, dict[str, float], dict]:
    """Time every path for each thread count and batch size; returns (timings, our model's name, {path: AP}
    with ``val_data``, {path: resident MB} with ``memory``)."""
    torch.manual_seed(0)
    frames = synthetic_frames(max(settings.batches))
    tv, tv_ours = torchvision_models(settings.fresh_init)
    loaded = our_model(settings)
    rows: list[Timing] = []
    with tempfile.TemporaryDirectory() as tmp:
        log.info("exporting and quantising %s", loaded.source)
        if settings.val_data:
            calibration = calibration_files(Path(settings.val_data) / "train2017", 100)
        else:
            calibration = write_frames(Path(tmp), 2 if settings.quick else 16)
        files = exported_files(loaded, calibration, Path(tmp))
        ap: dict[str, float] = {}
        for n_threads in settings.threads:
            torch.set_num_threads(n_threads)
            cv2.setNumThreads(n_threads)
            ours = TorchRunner(
                fuse_for_inference(loaded.model, True), loaded.post, loaded.categories, resize=loaded.config.data.resize
            )
            runners = {paths.OURS_TV_WEIGHTS: tv_ours, paths.OURS_EAGER: ours}
            runners |= {path: runtimes.open_runner(rt, file, threads=n_threads) for path, (file, rt) in files.items()}
            runners[paths.OPENCV_DNN] = OpenCvDnnRunner(files[paths.ORT_FP32][0], threads=n_threads)
            if settings.val_data and not ap:  # accuracy does not depend on threads: once
                data = Path(settings.val_data)
                ann, images = data / "annotations" / "instances_val2017.json", data / "val2017"
                ap = {p: coco_accuracy(r, ann, images, desc=p)["AP"] for p, r in runners.items()
                      if p in paths.RUNTIME_PATHS}  # fmt: skip
            for batch in settings.batches:
                full, split = torchvision_calls(tv, frames[:batch])
                calls = {paths.TV_E2E: full, paths.TV_SPLIT: split}
                calls |= {path: runner_call(r, frames[:batch]) for path, r in runners.items()}
                warmup = 1 if settings.quick else 2
                timed, rounds = interleaved(calls, settings.repeats, warmup, settings.budget_s)
                for path, ms in timed.items():
                    rows.append(Timing(path, n_threads, batch, rounds, ms))
                    log.info("threads %d batch %d %-33s e2e %.1f ms", n_threads, batch, path, ms["e2e"])
        resident = resident_mb(memory_probes(loaded, files, Path(tmp))) if settings.memory else {}
    return rows, loaded.source, ap, resident


def memory_probes(loaded: LoadedModel, files: dict, folder: Path) -> dict[str, tuple[Path, str]]:
    """{path: (file, runtime)} of the runtimes whose memory is measured (the model saved as a checkpoint too)."""
    ckpt = folder / "model.pt"
    payload = {"model": loaded.model.state_dict(), "config": to_dict(loaded.config), "categories": loaded.categories}
    checkpoint.save(ckpt, payload)
    probes = {paths.OURS_EAGER: (ckpt, "torch")}
    return probes | {path: entry for path, entry in files.items() if path != paths.ORT_FP32_NMS}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help=f"checkpoint to time (default: the {REFERENCE_ROW} paper model, random)")
    p.add_argument("--threads", default="1,all", help="comma-separated thread counts; all = every core")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per measurement (median)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds per (threads, batch) configuration before fewer repeats (default 20)")  # fmt: skip
    p.add_argument("--fresh-init", action="store_true",
                   help="random weights as initialised (no BatchNorm statistics): tied scores")  # fmt: skip
    p.add_argument("--val-data", metavar="ROOT", help="COCO-layout root (annotations/instances_val2017.json, "
                   "val2017/, train2017/): the AP of each of our runtimes on it, and int8 calibrated on its "
                   "training images (e.g. runs/demo/data with --weights runs/demo/train/best.pt)")  # fmt: skip
    p.add_argument("--memory", action="store_true", help="also the resident memory of each runtime, each in a "
                   "fresh process (Linux)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 thread, batch 1, 3 repeats (a smoke test)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout, the table on stderr")


def settings_of(args: argparse.Namespace) -> Settings:
    """The ``Settings`` of the command line; a UserError for malformed lists."""
    try:
        threads = [os.cpu_count() or 1 if t == "all" else int(t) for t in args.threads.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise UserError("--threads and --batches take comma-separated numbers (and 'all' for threads)") from None
    repeats = args.repeats
    if args.quick:
        threads, batches, repeats = [1], [1], 3
    if min(threads + batches) < 1 or repeats < 1:
        raise UserError("threads, batches and --repeats must be positive")
    return Settings(weights=args.weights, threads=list(dict.fromkeys(threads)), batches=batches, repeats=repeats,
                    budget_s=args.budget, fresh_init=args.fresh_init, quick=args.quick,
                    val_data=Path(args.val_data) if args.val_data else None, memory=args.memory)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    rows, name, ap, resident = run_benchmark(settings)
    found = paths.all_targets(rows, ap, resident)
    label = name + (", weights as initialised" if settings.fresh_init else "")
    text = paths.timing_table(rows, label) + ("\n" + paths.targets_text(found) if found else "")
    weights = "as initialised" if settings.fresh_init else "BatchNorm statistics from synthetic frames"
    report = paths.json_report(rows, name, weights, SCORE_THRESH, ap=ap, resident=resident)
    if ap:
        text += f"\nAP on {settings.val_data}: " + ", ".join(f"{path} {value:.4f}" for path, value in ap.items())
    if resident:
        text += "\nresident MB (VmRSS / peak): " + ", ".join(f"{p} {m['VmRSS']:.0f} / {m['VmHWM']:.0f}"
                                                           for p, m in resident.items())  # fmt: skip
    text += f"\n{machine_line(report['machine'])}; load average {report['load_average']}"
    print(text, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0
