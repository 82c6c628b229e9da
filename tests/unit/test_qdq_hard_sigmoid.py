"""The int8 hard-sigmoid rewrite: same function on every uint8 input, fused by ONNX Runtime into QLinearAdd."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from detector.deploy.qdq_hard_sigmoid import OUTPUT_SCALE, rewrite_hard_sigmoids


def qdq_graph(x_scale: float, x_zero: int, y_scale: float, y_zero: int, alpha: float = 1 / 6) -> onnx.ModelProto:
    """x (uint8, 256) -> DQ -> HardSigmoid -> Q -> DQ -> y (float): the quantiser's pattern around a hard sigmoid."""
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
        numpy_helper.from_array(np.array(x_zero, np.uint8), "xz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(y_zero, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"], "dq_in"),
        helper.make_node("HardSigmoid", ["xf"], ["h"], "hs", alpha=alpha, beta=0.5),
        helper.make_node("QuantizeLinear", ["h", "ys", "yz"], ["hq"], "q"),
        helper.make_node("DequantizeLinear", ["hq", "ys", "yz"], ["y"], "dq_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray, optimized: str | None = None) -> np.ndarray:
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = optimized
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("x_scale,x_zero", [(0.05, 128), (0.1, 20), (0.02, 250), (0.5, 0)])
@pytest.mark.parametrize("y_scale,y_zero", [(1 / 255, 0), (0.7 / 255, 0), (2 / 255, 10)], ids=["01", "calib", "other"])
def test_rewrite_computes_the_same_hard_sigmoid_on_every_uint8_input(x_scale, x_zero, y_scale, y_zero, tmp_path):
    x = np.arange(256, dtype=np.uint8)
    hard_sigmoid = np.clip((x.astype(np.float64) - x_zero) * x_scale / 6 + 0.5, 0, 1)
    model = qdq_graph(x_scale, x_zero, y_scale, y_zero)
    before = run(model, x)
    assert rewrite_hard_sigmoids(model) == 1
    onnx.checker.check_model(model)
    after = run(model, x, str(tmp_path / "opt.onnx"))
    if y_zero == 0 and y_scale * 255 <= 1:  # the calibrated grid is kept: the original, up to rounding ties
        assert np.abs(after - before).max() <= y_scale + 1e-6
        assert np.abs(after - np.clip(hard_sigmoid, 0, y_scale * 255)).max() <= y_scale / 2 + 1e-6
    else:  # replaced by [0, 1] in steps of 1/255
        assert np.abs(after - hard_sigmoid).max() <= OUTPUT_SCALE / 2 + 1e-6
    fused = onnx.load(str(tmp_path / "opt.onnx"))
    ops = [n.op_type for n in fused.graph.node]
    assert "QLinearAdd" in ops and "HardSigmoid" not in ops


def test_other_hard_sigmoids_and_float_ones_are_left_alone():
    model = qdq_graph(0.05, 128, 1 / 255, 0, alpha=0.2)  # ONNX's default alpha, not MobileNetV3's 1/6
    assert rewrite_hard_sigmoids(model) == 0
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        )
    )
    assert rewrite_hard_sigmoids(plain) == 0
