"""The text graph (.pbtxt) with which OpenCV's DNN module runs a TF Object Detection API SSD frozen graph to the
detections, written here as OpenCV's ``samples/dnn/tf_text_graph_ssd.py`` writes it from a pipeline.config
(our own code; the facts below are from OpenCV's sources).

What OpenCV expects (``samples/dnn/tf_text_graph_ssd.py``, ``modules/dnn/src/tensorflow/tf_importer.cpp``,
``modules/dnn/src/layers/prior_box_layer.cpp``, ``detection_output_layer.cpp``, ``modules/dnn/src/nms.inl.hpp``):

* ``readNetFromTensorflow(pb, pbtxt)`` builds the net from the text graph and takes every Const it names from
  the binary one, by name; a Const with a value in both is an error, so the text graph lists none of the
  graph's Consts (only the few it adds itself, with their values).
* Kept: the graph's computing nodes up to each predictor's ``BoxPredictor_i/{BoxEncodingPredictor,
  ClassPredictor}/BiasAdd``; dropped: the Reshapes and the ``concat`` / ``concat_1`` after them (and the
  Preprocessor / Postprocessor / anchor-generator scopes a zoo graph has).
* ``loc_pred_transposed: true`` on each ``BoxPredictor_i/BoxEncodingPredictor/Conv2D``: the importer swaps
  the output channels (weights and bias) of that convolution per anchor, TF's (ty, tx, th, tw) ->
  (tx, ty, tw, th).
* Each predictor output goes through a ``Flatten`` (``<BiasAdd>/Flatten``; NHWC order, anchor-major); the
  flattened codes and logits are concatenated on the last axis (a Const ``concat/axis_flatten`` = -1) into
  ``BoxEncodingPredictor/concat`` and ``ClassPredictor/concat``.
* ``PriorBox_i`` (inputs: the level's box ``BiasAdd``, for its H x W, and the graph input, for the image
  size): ``flip`` and ``clip`` false, explicit ``width`` / ``height`` lists in input pixels (TF's
  ssd_anchor_generator: scales min + (max - min) i / (L - 1), then 1.0; level 0 with
  reduce_boxes_in_lowest_layer is (0.1, 1), (min, 2), (min, 1/2); other levels every aspect ratio at s_i,
  then sqrt(s_i s_i+1) square; times min(width, height)), ``variance`` = 1 / (x_scale, y_scale, width_scale,
  height_scale) of the faster_rcnn_box_coder. Centres at ((w + 0.5) W_img / W, (h + 0.5) H_img / H) (offset
  0.5, step image / map), order h, w, box; output (1, 2, 4 H W P): normalised xyxy boxes, then variances.
  The priors are concatenated on the last axis into ``PriorBox/concat``.
* The logits are reshaped to (0, -1, num_classes + 1), go through a ``Sigmoid`` (score_converter SIGMOID)
  and a ``Flatten``.
* ``DetectionOutput`` ``detection_out`` (codes, scores, priors): num_classes = classes + 1 (background 0),
  share_location, background_label_id 0, code_type CENTER_SIZE, nms_threshold, confidence_threshold
  (scores strictly above pass), top_k (per class, the best candidates that *enter* NMS; -1 or 0 = all),
  keep_top_k (the best NMS survivors over all classes). Decoding: centre = variance * code * prior size +
  prior centre, size = exp(variance * code) * prior size, unclipped (``clip`` false); greedy NMS suppresses
  IoU > nms_threshold. Output (1, 1, N, 7): image, label (the class slot), score, xmin, ymin, xmax, ymax
  normalised to the input, grouped by class (not sorted by score).
"""

from __future__ import annotations

import math

from google.protobuf import text_format
from tensorboard.compat.proto import attr_value_pb2, graph_pb2, tensor_pb2, types_pb2

# The zoo's pipeline.config of ssdlite_mobilenet_v3_{large,small}_coco (ssd_anchor_generator, box coder,
# batch_non_max_suppression); aspect ratio 1/3 is written 0.3333 there.
PIPELINE = {
    "num_classes": 90,
    "image_size": 320,
    "min_scale": 0.2,
    "max_scale": 0.95,
    "num_layers": 6,
    "aspect_ratios": (1.0, 2.0, 0.5, 3.0, 0.3333),
    "reduce_boxes_in_lowest_layer": True,
    "scales": (10.0, 10.0, 5.0, 5.0),  # y, x, height, width
    "iou_threshold": 0.6,
    "score_threshold": 1e-8,
    "max_detections_per_class": 100,
    "max_total_detections": 100,
}
INPUT = "normalized_input_image_tensor"
SCORES = "ClassPredictor/concat/sigmoid/Flatten"  # (1, anchors * slots): the scores DetectionOutput reads


def anchor_sizes(level: int, cfg: dict = PIPELINE) -> tuple[list[float], list[float]]:
    """(widths, heights) in input pixels of one level's boxes, as TF's ssd_anchor_generator lays them out."""
    n, lo, hi = cfg["num_layers"], cfg["min_scale"], cfg["max_scale"]
    scales = [lo + (hi - lo) * i / (n - 1) for i in range(n)] + [1.0]
    if level == 0 and cfg["reduce_boxes_in_lowest_layer"]:
        specs = [(0.1, 1.0), (lo, 2.0), (lo, 0.5)]
    else:
        specs = [(scales[level], r) for r in cfg["aspect_ratios"]]
        specs.append((math.sqrt(scales[level] * scales[level + 1]), 1.0))
    size = cfg["image_size"]
    return [s * math.sqrt(r) * size for s, r in specs], [s / math.sqrt(r) * size for s, r in specs]


def _tensor(values, dtype) -> attr_value_pb2.AttrValue:
    t = tensor_pb2.TensorProto(dtype=dtype)
    t.tensor_shape.dim.add(size=len(values))
    (t.float_val if dtype == types_pb2.DT_FLOAT else t.int_val).extend(values)
    return attr_value_pb2.AttrValue(tensor=t)


def ssd_text_graph(graph: bytes, cfg: dict = PIPELINE, top_k: int | None = None, keep_top_k: int | None = None,
                   fed_levels: dict[int, tuple[int, int]] | None = None) -> str:  # fmt: skip
    """The .pbtxt for the frozen ``graph`` (serialised GraphDef) and the pipeline ``cfg``.

    ``top_k`` / ``keep_top_k`` default to the config's max_detections_per_class / max_total_detections, as
    tf_text_graph_ssd.py writes them. ``fed_levels`` {level: (box values, class values) per location} turns
    those levels' predictor outputs (``BoxPredictor_i/.../BiasAdd``) into Placeholders the caller feeds (NCHW
    blobs, box codes in (tx, ty, tw, th) order since no convolution swaps them), in place of the graph's."""
    fed_levels = fed_levels or {}
    src = graph_pb2.GraphDef()
    src.ParseFromString(graph)
    out = graph_pb2.GraphDef()
    levels = cfg["num_layers"]
    fed = {}
    for level, (box_values, class_values) in fed_levels.items():
        for head, values in (("BoxEncodingPredictor", box_values), ("ClassPredictor", class_values)):
            fed[f"BoxPredictor_{level}/{head}/BiasAdd"] = values
    for node in src.node:
        if node.op in ("Const", "Reshape") or node.name in ("concat", "concat_1"):
            continue  # Consts come from the .pb; the Reshapes and concats are replaced below
        if node.name in fed:
            shape = attr_value_pb2.AttrValue()
            for d in (1, 1, 1, fed[node.name]):  # NHWC, a 1x1 map
                shape.shape.dim.add(size=d)
            out.node.add(name=node.name, op="Placeholder").attr["shape"].CopyFrom(shape)
            continue
        new = out.node.add()
        new.CopyFrom(node)
        if node.name in {f"BoxPredictor_{i}/BoxEncodingPredictor/Conv2D" for i in range(levels)}:
            new.attr["loc_pred_transposed"].b = True  # the importer swaps these output channels to (x, y, w, h)

    def add(name: str, op: str, inputs=(), **attrs):
        n = out.node.add(name=name, op=op)
        n.input.extend(inputs)
        for key, value in attrs.items():
            n.attr[key].CopyFrom(value)
        return name

    axis = add("concat/axis_flatten", "Const", value=_tensor([-1], types_pb2.DT_INT32))
    for head in ("ClassPredictor", "BoxEncodingPredictor"):
        flat = [add(f"BoxPredictor_{i}/{head}/BiasAdd/Flatten", "Flatten", [f"BoxPredictor_{i}/{head}/BiasAdd"])
                for i in range(levels)]  # fmt: skip
        add(f"{head}/concat", "ConcatV2", flat + [axis])
    y_scale, x_scale, h_scale, w_scale = cfg["scales"]
    variance = [1 / x_scale, 1 / y_scale, 1 / w_scale, 1 / h_scale]
    priors = []
    for i in range(levels):
        widths, heights = anchor_sizes(i, cfg)
        priors.append(add(f"PriorBox_{i}", "PriorBox", [f"BoxPredictor_{i}/BoxEncodingPredictor/BiasAdd", INPUT],
                          flip=attr_value_pb2.AttrValue(b=False), clip=attr_value_pb2.AttrValue(b=False),
                          width=_tensor(widths, types_pb2.DT_FLOAT), height=_tensor(heights, types_pb2.DT_FLOAT),
                          variance=_tensor(variance, types_pb2.DT_FLOAT)))  # fmt: skip
    add("PriorBox/concat", "ConcatV2", priors + [axis])
    slots = cfg["num_classes"] + 1
    shape = add("ClassPredictor/concat3d/shape", "Const", value=_tensor([0, -1, slots], types_pb2.DT_INT32))
    add("ClassPredictor/concat3d", "Reshape", ["ClassPredictor/concat", shape])
    add("ClassPredictor/concat/sigmoid", "Sigmoid", ["ClassPredictor/concat3d"])
    add(SCORES, "Flatten", ["ClassPredictor/concat/sigmoid"])
    a = attr_value_pb2.AttrValue
    add("detection_out", "DetectionOutput",
        ["BoxEncodingPredictor/concat", SCORES, "PriorBox/concat"],
        num_classes=a(i=slots), share_location=a(b=True), background_label_id=a(i=0),
        nms_threshold=a(f=cfg["iou_threshold"]), confidence_threshold=a(f=cfg["score_threshold"]),
        top_k=a(i=cfg["max_detections_per_class"] if top_k is None else top_k),
        keep_top_k=a(i=cfg["max_total_detections"] if keep_top_k is None else keep_top_k),
        code_type=a(s=b"CENTER_SIZE"))  # fmt: skip
    while True:  # as the script: drop what no longer leads anywhere (a fed level's own predictor branch)
        used = {name.split(":")[0].lstrip("^") for node in out.node for name in node.input} | {"detection_out"}
        dead = [k for k, node in enumerate(out.node) if node.name not in used]
        if not dead:
            return text_format.MessageToString(out)
        for k in reversed(dead):
            del out.node[k]
