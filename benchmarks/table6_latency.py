"""Table 6's latency column on any runtime (``tools/table6.py --latency [--runtime NAME]``): a row's model
(random weights, BatchNorm statistics measured on synthetic frames as a trained network's are) exported by
the export pipeline, then the median model time of one (1, 3, 320, 320) batch at 1 thread. The paper measured
its column on a phone with TF Lite (fp32 and int8); here the same models can be timed in PyTorch eager, ONNX
Runtime and OpenVINO, fp32, bf16 or int8, and ExecuTorch's XNNPACK.

Runtimes (``RUNTIMES``): ``torch`` (eager forward, BatchNorm unfolded, as the paper's models are defined),
``onnxruntime`` / ``onnxruntime-int8`` (our ONNX file, int8 QDQ calibrated on synthetic frames),
``openvino`` / ``openvino-bf16`` (the fp32 ONNX file in OpenVINO) and ``openvino-int8`` (OpenVINO's own
NNCF int8 IR, which needs ``pip install '.[openvino]'``), ``executorch`` / ``executorch-int8`` (a .pte on
XNNPACK, fp32 or PT2E int8; ``pip install '.[executorch]'``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.inference import calibrate_batchnorm, write_frames
from detector import build
from detector.build import LoadedModel
from detector.config import Config, ModelConfig
from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.deploy import runtimes
from detector.deploy.pipeline import FORMATS, ExportOptions, export
from detector.inference.timing import median_ms

# What each column runtime times: (the runtime that runs the file, the file's format, int8)
PLAN = {
    "onnxruntime": ("onnxruntime", "onnx", False),
    "onnxruntime-int8": ("onnxruntime", "onnx", True),
    "openvino": ("openvino", "onnx", False),
    "openvino-bf16": ("openvino-bf16", "onnx", False),
    "openvino-int8": ("openvino", "openvino", True),
    "executorch": ("executorch", "executorch", False),
    "executorch-int8": ("executorch", "executorch", True),
}
RUNTIMES = ("torch", *PLAN)


def model_latency_ms(model_cfg: ModelConfig, runtime: str, repeats: int = 15) -> float:
    """Median model milliseconds of the ``model_cfg`` model on ``runtime`` at 1 thread, batch 1."""
    cfg = Config(model=model_cfg)
    model = build.build_model(model_cfg).eval()
    stats = synthetic_frames(4, seed=2)
    calibrate_batchnorm(model, lambda: model(preprocess(stats, model.image_size)))
    x = preprocess(synthetic_frames(1, *model_cfg.image_size, seed=3), model_cfg.image_size)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if runtime == "torch":
            with torch.inference_mode():
                return median_ms(lambda: model(x), repeats)
        categories = [{"id": i + 1, "name": f"class{i + 1}"} for i in range(model_cfg.num_classes)]
        loaded = LoadedModel(model, build.build_postprocessor(cfg, model), categories, cfg, "table6")
        engine, fmt, int8 = PLAN[runtime]
        with tempfile.TemporaryDirectory() as tmp:
            calibration = write_frames(Path(tmp), 16) if int8 else None
            options = ExportOptions(format=fmt, calibration=calibration, check=False)
            path = export(loaded, Path(tmp) / f"model{FORMATS[fmt].suffix}", options, say=lambda _: None).path
            runner = runtimes.open_runner(engine, path, threads=1)
            return median_ms(lambda: runner.infer(x.numpy()), repeats)
    finally:
        torch.set_num_threads(previous)
