"""Hard sigmoids of a quantised (QDQ) graph as integer additions, for ONNX Runtime's int8 kernels.

ONNX Runtime has no int8 kernel for ``HardSigmoid`` (h-swish = x * hard_sigmoid(x) in MobileNetV3, and the
squeeze-and-excite gates). The quantiser leaves ``DequantizeLinear -> HardSigmoid -> QuantizeLinear`` around
each: three float passes over the tensor, about a tenth of the int8 model's time. But

    hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1)

is an addition whose clip comes free with uint8 saturation when its output grid spans [0, hi] with hi <= 1,
and the division by 6 is a change of the input's scale. So each
``DequantizeLinear(x_q; s, z) -> HardSigmoid -> QuantizeLinear(s_y, z_y)`` becomes
``DequantizeLinear(x_q; s / 6, z) + DequantizeLinear(1/2) -> QuantizeLinear(s_y, z_y)``, which ONNX Runtime
fuses into one ``QLinearAdd``. Min/max calibration gives hard sigmoids exactly such a grid (z_y = 0, since
ranges include 0), so the result is the original one, rounding ties aside; any other grid is replaced by
[0, 1] in steps of 1/255.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

OUTPUT_SCALE = 1.0 / 255.0


def _attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return a.f
    return default


def rewrite_hard_sigmoids(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every hard sigmoid (alpha 1/6, beta 1/2) of ``model`` that sits between a per-tensor
    uint8 ``DequantizeLinear`` and ``QuantizeLinear`` nodes only; returns how many were rewritten."""
    from onnx import helper, numpy_helper  # default install, imported on first use as every ONNX export
    from onnxruntime.quantization.onnx_model import ONNXModel

    graph, wrapped = model.graph, ONNXModel(model)
    inits = {t.name: t for t in graph.initializer}
    producer, consumers = wrapped.output_name_to_node(), wrapped.input_name_to_nodes()
    outputs = {o.name for o in graph.output}

    def scalar(name: str) -> np.ndarray | None:
        t = inits.get(name)
        return numpy_helper.to_array(t) if t is not None and not t.dims else None

    half_q = numpy_helper.from_array(np.array(1, np.uint8), "hard_sigmoid/half_q")
    half_scale = numpy_helper.from_array(np.array(0.5, np.float32), "hard_sigmoid/half_scale")
    zero = numpy_helper.from_array(np.array(0, np.uint8), "hard_sigmoid/zero")
    out_scale = numpy_helper.from_array(np.array(OUTPUT_SCALE, np.float32), "hard_sigmoid/out_scale")
    count, new_nodes, dropped = 0, [], []
    for node in list(graph.node):
        if node.op_type != "HardSigmoid" or node.domain not in ("", "ai.onnx"):
            continue
        if abs(_attribute(node, "alpha", 0.2) - 1 / 6) > 1e-6 or abs(_attribute(node, "beta", 0.5) - 0.5) > 1e-6:
            continue
        dq = producer.get(node.input[0])
        qs = consumers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or not qs:
            continue
        if any(q.op_type != "QuantizeLinear" or len(q.input) < 3 for q in qs):
            continue
        if any(
            q.output[0] in outputs or any(c.op_type != "DequantizeLinear" for c in consumers.get(q.output[0], []))
            for q in qs
        ):
            continue  # its uint8 leaves the pattern: another reader would need the same grid
        x_scale, x_zero = scalar(dq.input[1]), scalar(dq.input[2])
        if x_scale is None or x_zero is None or x_zero.dtype != np.uint8:
            continue
        if any(scalar(q.input[2]) is None or scalar(q.input[2]).dtype != np.uint8 for q in qs):
            continue
        name = node.name or f"hard_sigmoid_{count}"
        scale6 = numpy_helper.from_array(np.array(x_scale / 6, np.float32), f"{name}/x_scale_div6")
        graph.initializer.append(scale6)
        x6, half = f"{name}/x_div6", f"{name}/half"
        new_nodes.append(
            helper.make_node("DequantizeLinear", [dq.input[0], scale6.name, dq.input[2]], [x6], f"{name}/dq_div6")
        )
        new_nodes.append(
            helper.make_node("DequantizeLinear", [half_q.name, half_scale.name, zero.name], [half], f"{name}/dq_half")
        )
        if len(consumers[dq.output[0]]) == 1:
            dropped.append(dq)
        node.op_type, node.name = "Add", f"{name}/add_half"
        del node.input[:], node.attribute[:]
        node.input.extend([x6, half])
        for q in qs:
            if scalar(q.input[2]) == 0 and scalar(q.input[1]) * 255 <= 1 + 1e-6:
                continue  # a calibrated [0, hi <= 1] grid: saturation clips where the original did
            q.input[1], q.input[2] = out_scale.name, zero.name  # otherwise [0, 1] in steps of 1/255
            for dq_out in consumers.get(q.output[0], []):
                if dq_out.op_type == "DequantizeLinear":
                    dq_out.input[1], dq_out.input[2] = out_scale.name, zero.name
        count += 1
    if count:
        graph.initializer.extend([half_q, half_scale, zero, out_scale])
        for node in dropped:
            graph.node.remove(node)
        graph.node.extend(new_nodes)
        wrapped.topological_sort()
        wrapped.clean_initializers()
    return count
