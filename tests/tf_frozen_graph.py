"""A TF Object Detection API frozen graph of the paper's SSDLite MobileNetV3-Large† / Small†, written here
without TensorFlow and without the project's model code: TF's node names, ops (Conv2D, DepthwiseConv2dNative,
FusedBatchNormV3, Relu / Relu6, hard-swish AddV2 / Relu6 / Mul / Mul, SE Mean), NHWC layout, SAME padding,
(ty, tx, th, tw) box codes and 91 class slots, up to the predictors' Reshape and the two ConcatV2 outputs
``concat`` (1, anchors, 4) and ``concat_1`` (1, anchors, 91). Random weights.

The architecture comes from TF's own tables (``slim/nets/mobilenet/mobilenet_v3.py``, V3_LARGE_DETECTION /
V3_SMALL_DETECTION, and ``ssd_mobilenet_v3_feature_extractor.py``), written out below, so a test that runs this
graph in OpenCV's DNN module and compares it with our converted model checks names, shapes, padding, the
box-code order and the class-slot order against implementations nobody here wrote.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from tensorboard.compat.proto import attr_value_pb2, graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

FE = "FeatureExtractor/MobilenetV3"
# (kernel, stride, expansion channels, output channels, squeeze-excite, activation); † tails already halved.
LARGE = [(3, 1, 16, 16, False, "RE"), (3, 2, 64, 24, False, "RE"), (3, 1, 72, 24, False, "RE"),
         (5, 2, 72, 40, True, "RE"), (5, 1, 120, 40, True, "RE"), (5, 1, 120, 40, True, "RE"),
         (3, 2, 240, 80, False, "HS"), (3, 1, 200, 80, False, "HS"), (3, 1, 184, 80, False, "HS"),
         (3, 1, 184, 80, False, "HS"), (3, 1, 480, 112, True, "HS"), (3, 1, 672, 112, True, "HS"),
         (5, 2, 672, 80, True, "HS"), (5, 1, 480, 80, True, "HS"), (5, 1, 480, 80, True, "HS")]  # fmt: skip
SMALL = [(3, 2, 16, 16, True, "RE"), (3, 2, 72, 24, False, "RE"), (3, 1, 88, 24, False, "RE"),
         (5, 2, 96, 40, True, "HS"), (5, 1, 240, 40, True, "HS"), (5, 1, 240, 40, True, "HS"),
         (5, 1, 120, 48, True, "HS"), (5, 1, 144, 48, True, "HS"), (5, 2, 288, 48, True, "HS"),
         (5, 1, 288, 48, True, "HS"), (5, 1, 288, 48, True, "HS")]  # fmt: skip
# arch -> (bneck rows, last conv channels, bneck whose expansion output is C4, TF's layer index of C5)
ARCHS = {"large": (LARGE, 480, 12, 17), "small": (SMALL, 288, 8, 13)}
EXTRA_DEPTHS = (512, 256, 256, 128)
NUM_SLOTS = 91  # background + 90 COCO ids


def make_divisible(v: float, divisor: int = 8) -> int:
    """TF's ``_make_divisible`` (slim mobilenet), for the squeeze widths."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class GraphWriter:
    def __init__(self, seed: int, read: bool, drop: str | None, misshape: str | None):
        self.graph = graph_pb2.GraphDef()
        self.rng = np.random.default_rng(seed)
        self.read, self.drop, self.misshape = read, drop, misshape
        self.weights: dict[str, np.ndarray] = {}

    def node(self, name: str, op: str, inputs=(), **attrs) -> str:
        n = self.graph.node.add(name=name, op=op)
        n.input.extend(inputs)
        for key, value in attrs.items():
            n.attr[key].CopyFrom(value)
        return name

    def const(self, name: str, value: np.ndarray, weight: bool = True) -> str:
        value = np.asarray(value)
        dtype = types_pb2.DT_INT32 if value.dtype.kind == "i" else types_pb2.DT_FLOAT
        value = value.astype(np.int32 if dtype == types_pb2.DT_INT32 else np.float32)
        if weight:
            self.weights[name] = value
            if name == self.misshape:
                value = value[..., :-1]
        tensor = tensor_pb2.TensorProto(dtype=dtype)
        for d in value.shape:
            tensor.tensor_shape.dim.add(size=d)
        if value.ndim == 0:  # scalars as int_val / float_val, as TF writes them (OpenCV needs it for axes)
            (tensor.int_val if dtype == types_pb2.DT_INT32 else tensor.float_val).append(value.item())
        else:
            tensor.tensor_content = np.ascontiguousarray(value).tobytes()
        if name == self.drop:
            return name  # left dangling: the converter must name it
        self.node(name, "Const", dtype=_type(dtype), value=attr_value_pb2.AttrValue(tensor=tensor))
        if self.read and weight:
            return self.node(name + "/read", "Identity", [name], T=_type(dtype))
        return name

    def conv(self, scope: str, x: str, shape: tuple, stride: int = 1, bias: bool = False) -> str:
        w = self.const(scope + "/weights", self.rng.normal(0, (1 / np.prod(shape[:3])) ** 0.5, shape))
        y = self.node(scope + "/Conv2D", "Conv2D", [x, w], T=_type(), data_format=_s("NHWC"), padding=_s("SAME"),
                      strides=_ints([1, stride, stride, 1]), dilations=_ints([1, 1, 1, 1]))  # fmt: skip
        if bias:
            b = self.const(scope + "/biases", self.rng.normal(0, 0.3, shape[-1:]))
            y = self.node(scope + "/BiasAdd", "BiasAdd", [y, b], T=_type(), data_format=_s("NHWC"))
        return y

    def depthwise(self, scope: str, x: str, k: int, c: int, stride: int = 1) -> str:
        w = self.const(scope + "/depthwise_weights", self.rng.normal(0, 1 / k, (k, k, c, 1)))
        strides, dilations = _ints([1, stride, stride, 1]), _ints([1, 1, 1, 1])
        return self.node(scope + "/depthwise", "DepthwiseConv2dNative", [x, w], T=_type(), padding=_s("SAME"),
                         data_format=_s("NHWC"), strides=strides, dilations=dilations)  # fmt: skip

    def depthwise_bn_act(self, scope: str, x: str, k: int, c: int, act: str, stride: int = 1) -> str:
        return self.act(scope, self.batch_norm(scope, self.depthwise(scope, x, k, c, stride), c), act)

    def placeholder(self, name: str, shape: tuple) -> str:
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
        proto = tensor_shape_pb2.TensorShapeProto(dim=dims)
        return self.node(name, "Placeholder", dtype=_type(), shape=attr_value_pb2.AttrValue(shape=proto))

    def batch_norm(self, scope: str, x: str, c: int) -> str:
        rng = self.rng
        stats = (("gamma", rng.uniform(0.5, 1.5, c)), ("beta", rng.normal(0, 0.2, c)),
                 ("moving_mean", rng.normal(0, 0.2, c)), ("moving_variance", rng.uniform(0.5, 2.0, c)))  # fmt: skip
        inputs = [x] + [self.const(f"{scope}/BatchNorm/{name}", value) for name, value in stats]
        return self.node(f"{scope}/BatchNorm/FusedBatchNormV3", "FusedBatchNormV3", inputs, T=_type(), U=_type(),
                         data_format=_s("NHWC"), epsilon=attr_value_pb2.AttrValue(f=0.001),
                         is_training=attr_value_pb2.AttrValue(b=False))  # fmt: skip

    def act(self, scope: str, x: str, kind: str) -> str:
        if kind == "RE":
            return self.node(scope + "/Relu", "Relu", [x], T=_type())
        if kind == "R6":
            return self.node(scope + "/Relu6", "Relu6", [x], T=_type())
        h = scope + "/hard_swish"  # x * relu6(x + 3) * (1 / 6), as slim's mobilenet_v3.hard_swish
        y = self.node(h + "/add", "AddV2", [x, self.const(h + "/add/y", np.float32(3), False)], T=_type())
        y = self.node(h + "/mul", "Mul", [x, self.node(h + "/Relu6", "Relu6", [y], T=_type())], T=_type())
        return self.node(h + "/mul_1", "Mul", [y, self.const(h + "/mul_1/y", np.float32(1 / 6), False)], T=_type())

    def conv_bn_act(self, scope: str, x: str, shape: tuple, act: str | None, stride: int = 1) -> str:
        y = self.batch_norm(scope, self.conv(scope, x, shape, stride), shape[-1])
        return self.act(scope, y, act) if act else y

    def squeeze_excite(self, scope: str, x: str, c: int) -> str:
        s, squeeze = scope + "/squeeze_excite", make_divisible(c / 4)
        axes = self.const(s + "/Mean/reduction_indices", np.array([1, 2], np.int32), False)
        y = self.node(s + "/Mean", "Mean", [x, axes], T=_type(), Tidx=_type(types_pb2.DT_INT32),
                      keep_dims=attr_value_pb2.AttrValue(b=True))  # fmt: skip
        y = self.act(s + "/Conv", self.conv(s + "/Conv", y, (1, 1, c, squeeze), bias=True), "RE")
        y = self.conv(s + "/Conv_1", y, (1, 1, squeeze, c), bias=True)  # gate: relu6(y + 3) * 0.16667 (TF's)
        y = self.node(s + "/Conv_1/add", "AddV2", [y, self.const(s + "/Conv_1/add/y", np.float32(3), False)], T=_type())
        y = self.node(s + "/Conv_1/Relu6", "Relu6", [y], T=_type())
        y = self.node(s + "/Conv_1/mul", "Mul", [y, self.const(s + "/Conv_1/mul/y", np.float32(0.16667), False)],
                      T=_type())  # fmt: skip
        return self.node(s + "/mul", "Mul", [x, y], T=_type())


def _type(t=types_pb2.DT_FLOAT):
    return attr_value_pb2.AttrValue(type=t)


def _s(text: str):
    return attr_value_pb2.AttrValue(s=text.encode())


def _ints(values):
    return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=list(values)))


def frozen_graph(arch: str, size: int = 320, seed: int = 0, read: bool = False, drop: str | None = None,
                 misshape: str | None = None) -> tuple[bytes, dict[str, np.ndarray]]:  # fmt: skip
    """(serialised GraphDef, {weight Const name: value in TF layout}) of the ``arch`` ("large" | "small")
    model at ``size``; input ``normalized_input_image_tensor`` (1, size, size, 3) float in [-1, 1] (NHWC).
    ``read`` reads weights through ``/read`` Identities; ``drop`` leaves one weight out; ``misshape`` writes
    one weight with its last dimension one short."""
    rows, last, c4_block, c5_layer = ARCHS[arch]
    g = GraphWriter(seed, read, drop, misshape)
    x = g.placeholder("normalized_input_image_tensor", (1, size, size, 3))
    x = g.conv_bn_act(f"{FE}/Conv", x, (3, 3, 3, 16), "HS", stride=2)
    channels, c4 = 16, None
    for i, (k, stride, exp, out, se, act) in enumerate(rows):
        scope, block_in = f"{FE}/expanded_conv" + (f"_{i}" if i else ""), x
        if exp != channels:
            x = g.conv_bn_act(scope + "/expand", x, (1, 1, channels, exp), act)
        if i == c4_block:
            c4 = x  # the expansion output of this bneck feeds BoxPredictor_0 (the paper's C4 tap)
        x = g.depthwise_bn_act(scope + "/depthwise", x, k, exp, act, stride)
        if se:
            x = g.squeeze_excite(scope, x, exp)
        x = g.conv_bn_act(scope + "/project", x, (1, 1, exp, out), None)
        if stride == 1 and out == channels:
            x = g.node(scope + "/add", "AddV2", [x, block_in], T=_type())
        channels = out
    x = g.conv_bn_act(f"{FE}/Conv_1", x, (1, 1, channels, last), "HS")
    maps, channels = [(c4, rows[c4_block][2]), (x, last)], last
    for i, depth in enumerate(EXTRA_DEPTHS, start=2):
        scope = f"{FE}/layer_{c5_layer}"
        x = g.conv_bn_act(f"{scope}_1_Conv2d_{i}_1x1_{depth // 2}", x, (1, 1, channels, depth // 2), "R6")
        dw = f"{scope}_2_Conv2d_{i}_3x3_s2_{depth}_depthwise"
        x = g.depthwise_bn_act(dw, x, 3, depth // 2, "R6", stride=2)
        x = g.conv_bn_act(f"{scope}_2_Conv2d_{i}_3x3_s2_{depth}", x, (1, 1, depth // 2, depth), "R6")
        maps.append((x, depth))
        channels = depth
    outputs = {4: [], NUM_SLOTS: []}
    for j, (feature, c) in enumerate(maps):
        anchors = 3 if j == 0 else 6
        for head, values in (("BoxEncodingPredictor", 4), ("ClassPredictor", NUM_SLOTS)):
            scope = f"BoxPredictor_{j}/{head}"
            y = g.depthwise_bn_act(scope + "_depthwise", feature, 3, c, "R6")
            y = g.conv(scope, y, (1, 1, c, anchors * values), bias=True)
            shape_const = g.const(scope + "/Reshape/shape", np.array([1, -1, values], np.int32), False)
            outputs[values].append(g.node(scope + "/Reshape", "Reshape", [y, shape_const], T=_type(),
                                          Tshape=_type(types_pb2.DT_INT32)))  # fmt: skip
    for name, parts in (("concat", outputs[4]), ("concat_1", outputs[NUM_SLOTS])):
        axis = g.const(name + "/axis", np.int32(1), False)
        g.node(name, "ConcatV2", parts + [axis], T=_type(), N=attr_value_pb2.AttrValue(i=len(parts)),
               Tidx=_type(types_pb2.DT_INT32))  # fmt: skip
    return g.graph.SerializeToString(), g.weights


def write_zoo_tarball(path: Path, folder: str, graph: bytes, pipeline_config: str | None = None) -> None:
    """A ``.tar.gz`` laid out as the TF zoo's: ``folder/frozen_inference_graph.pb`` among other files, with
    ``folder/pipeline.config`` holding ``pipeline_config`` (protobuf text) when it is given."""
    files = [(f"{folder}/checkpoint", b'model_checkpoint_path: "model.ckpt"\n'),
             (f"{folder}/frozen_inference_graph.pb", graph)]  # fmt: skip
    if pipeline_config is not None:
        files.append((f"{folder}/pipeline.config", pipeline_config.encode()))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
