"""Post-training int8 quantisation of a raw ONNX graph with ONNX Runtime (static, QDQ, per-channel weights).

Activation ranges are calibrated (min/max) on real images run through the model's own pre-processing
(``detector.deploy.calibration``). Weights are int8 per output channel, activations uint8 (the fast u8 x s8
path of x86 VNNI and ARM dot products). ``quant_pre_process`` (shape inference and graph optimisation) runs
first, as ONNX Runtime recommends; afterwards the hard sigmoids become int8 additions
(``detector.deploy.qdq_hard_sigmoid``). onnx and onnxruntime (default install) are imported on first use.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector.deploy.qdq_hard_sigmoid import rewrite_hard_sigmoids

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


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


def quantize(fp32_path: Path, int8_path: Path, calibration: list[np.ndarray]) -> None:
    """Quantise the raw graph at ``fp32_path`` to ``int8_path``, calibrated on ``calibration`` ((1, 3, H, W)
    float32 model inputs); the caller sets the metadata."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches:  # onnxruntime's CalibrationDataReader protocol
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches = ({"images": batch} for batch in calibration)

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
                Batches(),
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
        len(calibration),
        len(excluded),
        rewritten,
    )
