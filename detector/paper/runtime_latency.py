"""Table 6's latency column on any runtime: a row's model (random weights, BatchNorm statistics measured on
synthetic frames as a trained network's are) exported as tools/export.py exports it, then the median model
time of one (1, 3, 320, 320) batch at 1 thread. The paper measured its column on a phone with TF Lite (fp32
and int8); here the same models can be timed in PyTorch eager, ONNX Runtime and OpenVINO, fp32, bf16 or int8.

Runtimes (``RUNTIMES``): ``torch`` (eager forward, BatchNorm unfolded, as the paper's models are defined),
``onnxruntime`` / ``onnxruntime-int8`` (our ONNX file, int8 QDQ calibrated on synthetic frames),
``openvino`` / ``openvino-bf16`` (the fp32 ONNX file in OpenVINO) and ``openvino-int8`` (OpenVINO's own
NNCF int8 IR; these three need ``pip install '.[openvino]'``), ``executorch`` / ``executorch-int8`` (a .pte on
XNNPACK, fp32 or PT2E int8; ``pip install '.[executorch]'``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from detector import build
from detector.config import Config
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy.pipeline import OnnxExporter
from detector.paper.complexity import latency_ms, median_call_ms
from detector.paper.inference_benchmark import calibration_images
from detector.paper.latency import calibrate_batchnorm

RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8", "executorch",
            "executorch-int8")  # fmt: skip


def model_latency_ms(model_cfg, runtime: str, repeats: int = 15) -> float:
    """Median model milliseconds of the ``model_cfg`` model on ``runtime`` at 1 thread, batch 1."""
    cfg = Config(model=model_cfg)
    model = build.build_model(model_cfg).eval()
    stats = synthetic_frames(4, seed=2)
    calibrate_batchnorm(model, lambda: model(preprocess(stats, model.image_size)))
    x = torch.rand(1, 3, *model_cfg.image_size)
    if runtime == "torch":
        with torch.inference_mode():
            return latency_ms(model, x, repeats=repeats, threads=1)
    post = build.build_postprocessor(cfg, model.anchors)
    categories = [{"id": i + 1, "name": f"class{i + 1}"} for i in range(model_cfg.num_classes)]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp, OnnxExporter(model, post, categories, cfg, check=False) as exporter:
            if runtime == "onnxruntime-int8":
                path = exporter.int8(calibration_images(Path(tmp), 16))
            else:
                path = exporter.fp32()
            if runtime.startswith("executorch"):
                from detector.deploy.executorch_runtime import ExecuTorchDetector, export_pte_file

                calib = calibration_images(Path(tmp), 16) if runtime == "executorch-int8" else None
                path = Path(tmp) / "model.pte"
                export_pte_file(model, post, categories, cfg, path, int8_calibration_files=calib, say=lambda _: None)
                detector = ExecuTorchDetector(path, threads=1)
            elif runtime.startswith("onnxruntime"):
                from detector.deploy.onnx_runtime import OnnxDetector

                detector = OnnxDetector(path, threads=1)
            else:
                from detector.deploy.openvino_runtime import OpenVinoDetector, export_ir
                from detector.deploy.quantize import calibration_batches

                if runtime == "openvino-int8":
                    batches = calibration_batches(calibration_images(Path(tmp), 16), model_cfg.image_size)
                    export_ir(path, Path(tmp) / "int8.xml", batches)
                    path = Path(tmp) / "int8.xml"
                detector = OpenVinoDetector(path, "bf16" if runtime == "openvino-bf16" else "f32", threads=1)
            return median_call_ms(detector.infer, x.numpy(), repeats)
    finally:
        torch.set_num_threads(previous)
