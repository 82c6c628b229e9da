"""Post-training int8 quantisation of a raw ONNX graph with ONNX Runtime (static, QDQ, per-channel weights).

Activation ranges are calibrated (min/max) on real images run through the model's own pre-processing.
Weights are int8 per output channel, activations uint8 (the fast u8 x s8 path of x86 VNNI and ARM dot
products). ``quant_pre_process`` (shape inference and graph optimisation) runs first, as ONNX Runtime
recommends; afterwards the hard sigmoids become int8 additions (``detector.deploy.qdq_hard_sigmoid``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from detector.data.image_io import image_files, preprocess, read_image
from detector.deploy.qdq_hard_sigmoid import rewrite_hard_sigmoids
from detector.errors import UserError

log = logging.getLogger(__name__)


def calibration_files(folder: str | Path, limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``folder``, spread evenly over its sorted listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--calib {folder}: not a folder")
    files = image_files(folder)
    if not files:
        raise UserError(f"--calib {folder}: no image files in it")
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


class ImageCalibration(CalibrationDataReader):
    """Feeds ``{"images": (1, 3, H, W) float32}`` batches of the calibration images; unreadable ones are skipped."""

    def __init__(self, files: list[Path], input_size: tuple[int, int], desc: str = "calibrating") -> None:
        self.files, self.input_size = files, input_size
        self.used = 0
        self._iter = iter(tqdm(files, desc=desc, unit="img", leave=False))

    def get_next(self) -> dict[str, np.ndarray] | None:
        for path in self._iter:
            try:
                image = read_image(path)
            except UserError as exc:
                log.warning("calibration: skipped %s", exc)
                continue
            self.used += 1
            return {"images": preprocess([image], self.input_size).numpy()}
        if self.used == 0:
            raise UserError("calibration: none of the --calib images could be read")
        return None

    def rewind(self) -> None:
        self.used = 0
        self._iter = iter(self.files)


def calibration_batches(files: list[Path], input_size: tuple[int, int], desc: str = "calibrating") -> list[np.ndarray]:
    """Every readable image of ``files`` as a (1, 3, H, W) float32 model input (the batches ``ImageCalibration``
    feeds), for quantisers that take a list (NNCF, PT2E) and for drift checks."""
    reader = ImageCalibration(files, input_size, desc)
    return [d["images"] for d in iter(reader.get_next, None)]


def after_last_conv(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes with no convolution downstream: box decoding, score function and the reshapes that
    gather the head outputs. They stay float, so scores and box coordinates keep their full resolution.
    Unnamed nodes are given names here (the quantiser excludes nodes by name)."""
    nodes = list(model.graph.node)
    for i, node in enumerate(nodes):
        if not node.name:
            node.name = f"unnamed_{i}"
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    conv_below = [False] * len(nodes)
    for i in reversed(range(len(nodes))):  # graph nodes are topologically sorted
        below = (conv_below[j] for out in nodes[i].output for j in consumers.get(out, []))
        conv_below[i] = nodes[i].op_type == "Conv" or any(below)
    return [node.name for node, below in zip(nodes, conv_below) if not below]


def quantize_raw(fp32_path: str | Path, int8_path: str | Path, reader: ImageCalibration) -> None:
    """Quantise the raw graph at ``fp32_path`` to ``int8_path`` (no metadata; the caller adds it)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        model = onnx.load(str(prepared))
        excluded = after_last_conv(model)
        onnx.save(model, str(prepared))
        logging.disable(logging.INFO)  # the quantiser logs every bias copy at INFO on the root logger
        try:
            quantize_static(
                str(prepared),
                str(int8_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=excluded,
            )
        finally:
            logging.disable(logging.NOTSET)
    quantised = onnx.load(str(int8_path))
    rewritten = rewrite_hard_sigmoids(quantised)
    onnx.save(quantised, str(int8_path))
    log.info(
        "quantised with %d calibration images (%d output nodes kept float, %d hard sigmoids as int8 additions)",
        reader.used,
        len(excluded),
        rewritten,
    )
