"""The inference benchmark run: torchvision's ssdlite320_mobilenet_v3_large beside our paths, on this CPU.

Input: decoded (480, 640, 3) uint8 RGB synthetic frames, so pre-processing is timed too. Paths (names in
``detector.paper.benchmark_report``): torchvision's full call and its split steps; torchvision's random
weights converted into our model, run eagerly with torchvision's post-processing settings; our model (a
checkpoint, or the paper's V3† with random weights) eagerly (BatchNorm folded, channels-last) and in ONNX
Runtime fp32 (raw graph + our PostProcessor), fp32 with NMS in the graph, and int8 (calibrated on synthetic
frames). The ONNX files come from the export pipeline (``detector.deploy.pipeline``). Every path uses score
threshold 0.001 (torchvision's). Unless ``fresh_init``, random weights get BatchNorm statistics measured on
synthetic frames (``latency.calibrate_batchnorm``), as a trained network's are.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from detector import build, checkpoint
from detector.config import Config, LossConfig, PostprocessConfig, to_dict
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy import runtimes
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.onnx_runtime import OnnxDetector
from detector.deploy.openvino_runtime import OpenVinoDetector, export_ir
from detector.deploy.pipeline import OnnxExporter
from detector.deploy.quantize import calibration_batches, calibration_files
from detector.deploy.torch_runtime import Detector
from detector.evaluation.detector_accuracy import coco_accuracy
from detector.paper import benchmark_report as paths
from detector.paper.latency import (
    Timing,
    calibrate_batchnorm,
    detector_call,
    measure,
    torchvision_calls,
    torchvision_images,
)
from detector.paper.runtime_memory import resident_mb
from detector.paper.table6 import REFERENCE_ROW, row_named
from detector.weights.torchvision_ssdlite import TORCHVISION_CONFIG, coco_categories, convert_state_dict

log = logging.getLogger(__name__)
SCORE_THRESH = 0.001  # torchvision's


def our_model(weights: str | Path | None):
    """(model, post-processor with threshold 0.001, categories, Config, name) of ``weights`` or the V3† model."""
    if weights:
        model, post, categories, cfg = build.load_detector(weights)
        post.score_thresh = SCORE_THRESH
        return model, post, categories, cfg, Path(weights).name
    cfg = Config(
        model=row_named(REFERENCE_ROW).model_config(),
        loss=LossConfig(kind="focal"),
        postprocess=PostprocessConfig(score_thresh=SCORE_THRESH),
    )
    model = build.build_model(cfg.model).eval()
    return model, build.build_postprocessor(cfg, model.anchors), coco_categories(), cfg, f"{REFERENCE_ROW} (paper)"


def calibration_images(folder: Path, count: int) -> list[Path]:
    """``count`` synthetic frames written as PNG files under ``folder`` (int8 calibration input)."""
    files = []
    for i, frame in enumerate(synthetic_frames(count, seed=1)):
        files.append(folder / f"calib{i}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return files


def openvino_files(exporter: OnnxExporter, fp32: Path, calibration: list[Path], folder: Path) -> dict[str, tuple]:
    """{path: (file, precision)} of the OpenVINO paths (none without OpenVINO): our fp32 ONNX file at f32 and
    bf16 (on CPUs with it), and OpenVINO's own int8 IR (NNCF) calibrated on ``calibration``."""
    if not runtimes.installed("openvino"):
        return {}
    files = {paths.OV_FP32: (fp32, "f32")}
    if runtimes.installed("openvino-bf16"):
        files[paths.OV_BF16] = (fp32, "bf16")
    export_ir(fp32, folder / "int8.xml", calibration_batches(calibration, exporter.post.input_size, "NNCF calibration"))
    files[paths.OV_INT8] = (folder / "int8.xml", "f32")
    return files


def executorch_files(model, post, categories, cfg, calibration: list[Path], folder: Path) -> dict[str, Path]:
    """{path: .pte} of the ExecuTorch XNNPACK paths, fp32 and PT2E int8 (none without '.[executorch]')."""
    if not runtimes.installed("executorch"):
        return {}
    from detector.deploy.executorch_runtime import export_pte_file

    files = {paths.ET_FP32: folder / "fp32.pte", paths.ET_INT8: folder / "int8.pte"}
    log.info("lowering to ExecuTorch XNNPACK, fp32 and int8 (a minute or more)")
    export_pte_file(model, post, categories, cfg, files[paths.ET_FP32], say=log.debug)
    export_pte_file(model, post, categories, cfg, files[paths.ET_INT8], int8_calibration_files=calibration,
                    say=log.debug)  # fmt: skip
    return files


def accuracy(detectors: dict, accuracy_set: tuple[Path, Path]) -> dict[str, float]:
    """{path: COCO AP (0-1)} of each detector on the labelled set (annotation JSON, image folder)."""
    ann, images = accuracy_set
    return {path: coco_accuracy(det, ann, images, desc=path)["AP"] for path, det in detectors.items()}


def run_benchmark(weights: str | Path | None = None, threads: Sequence[int] = (1,), batches: Sequence[int] = (1,),
                  repeats: int = 15, budget_s: float = 20.0, fresh_init: bool = False, quick: bool = False,
                  val_data: Path | None = None,
                  memory: bool = False) -> tuple[list[Timing], str, dict[str, float], dict]:  # fmt: skip
    """Time every path for each thread count and batch size; returns (timings, our model's name, {path: AP},
    {path: resident MB} measured with ``memory``, each runtime in a fresh process: ``runtime_memory``).

    ``quick`` uses fewer calibration images and one warm-up round; ``budget_s`` caps the seconds per
    configuration (``latency.measure``). ``val_data`` (a COCO-layout root: annotations/instances_val2017.json,
    val2017/, train2017/) scores each of our runtimes on its validation set (AP, for the fastest-runtime
    target), and int8 is then calibrated on 100 of its training images instead of synthetic frames.
    """
    torch.manual_seed(0)
    frames = synthetic_frames(max(batches))
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    stats_frames = synthetic_frames(8, seed=2)  # BatchNorm statistics
    if not fresh_init:
        images = torchvision_images(stats_frames)
        calibrate_batchnorm(tv, lambda: tv.head(list(tv.backbone(tv.transform(images)[0].tensors).values())))
    tv_ours = build.build_model(TORCHVISION_CONFIG.model, init=False)
    tv_ours.load_state_dict(convert_state_dict(tv.state_dict(), tv_ours))
    tv_post = build.build_postprocessor(TORCHVISION_CONFIG, tv_ours.anchors)
    model, post, categories, cfg, name = our_model(weights)
    if not weights and not fresh_init:
        calibrate_batchnorm(model, lambda: model(preprocess(stats_frames, model.image_size)))
    rows: list[Timing] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        OnnxExporter(model, post, categories, cfg, dynamic_batch=True, source="benchmark", check=False) as exporter,
    ):
        log.info("exporting and quantising %s", name)
        if val_data:
            calibration = calibration_files(Path(val_data) / "train2017", 100)
        else:
            calibration = calibration_images(Path(tmp), 2 if quick else 16)
        files = {
            paths.ORT_FP32: exporter.fp32(),
            paths.ORT_FP32_NMS: exporter.fp32(nms=True),
            paths.ORT_INT8: exporter.int8(calibration),
        }
        ov_files = openvino_files(exporter, files[paths.ORT_FP32], calibration, Path(tmp))
        et_files = executorch_files(model, post, categories, cfg, calibration, Path(tmp))
        ap: dict[str, float] = {}
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            cv2.setNumThreads(n_threads)
            detectors = {
                paths.OURS_TV_WEIGHTS: Detector(fuse_for_inference(tv_ours, True), tv_post, coco_categories()),
                paths.OURS_EAGER: Detector(fuse_for_inference(model, True), post, categories),
                **{path: OnnxDetector(file, threads=n_threads) for path, file in files.items()},
                **{path: OpenVinoDetector(f, precision, n_threads) for path, (f, precision) in ov_files.items()},
                **{path: runtimes.open_runtime("executorch", f, threads=n_threads) for path, f in et_files.items()},
            }
            if val_data and not ap:  # accuracy does not depend on threads: once
                data = Path(val_data)
                scored = {p: d for p, d in detectors.items() if p in paths.RUNTIME_PATHS}
                ap = accuracy(scored, (data / "annotations" / "instances_val2017.json", data / "val2017"))
            for batch in batches:
                batch_frames = frames[:batch]
                full, split = torchvision_calls(tv, batch_frames)
                calls = {paths.TV_E2E: full, paths.TV_SPLIT: split}
                calls.update({path: detector_call(det, batch_frames) for path, det in detectors.items()})
                timed, rounds = measure(calls, repeats, 1 if quick else 2, budget_s)
                for path, ms in timed.items():
                    rows.append(Timing(path, n_threads, batch, rounds, ms))
                    log.info("threads %d batch %d %-33s e2e %.1f ms", n_threads, batch, path, ms["e2e"])
        resident = {}
        if memory:
            probes = memory_probes(model, cfg, categories, files, ov_files, Path(tmp))
            resident = resident_mb(probes | {path: (f, "executorch") for path, f in et_files.items()})
    return rows, name, ap, resident


def memory_probes(model, cfg, categories, files: dict, ov_files: dict, folder: Path) -> dict[str, tuple[Path, str]]:
    """{path: (file, runtime)} of the runtimes whose memory is measured (the model saved as a checkpoint too)."""
    ckpt = folder / "model.pt"
    checkpoint.save(ckpt, {"model": model.state_dict(), "config": to_dict(cfg), "categories": categories})
    probes = {paths.OURS_EAGER: (ckpt, "torch"), paths.ORT_FP32: (files[paths.ORT_FP32], "onnxruntime"),
              paths.ORT_INT8: (files[paths.ORT_INT8], "onnxruntime")}  # fmt: skip
    for path, (file, precision) in ov_files.items():
        probes[path] = (file, "openvino-bf16" if precision == "bf16" else "openvino")
    return probes
