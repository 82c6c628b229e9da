"""The paper's released models: TF Object Detection API frozen graphs -> checkpoints of ours, without TensorFlow.

``ssd_mobilenet_v3_{large,small}_coco_2020_01_14/frozen_inference_graph.pb`` hold every weight as a Const
named after its TF variable (docs/tf_frozen_graph.md): ``FeatureExtractor/MobilenetV3/expanded_conv_N/...``,
the extra layers ``layer_17_*`` (Large) / ``layer_13_*`` (Small), and ``BoxPredictor_j/...``. The graph is
parsed with the compiled TF protos that ``tensorboard`` ships (``pip install '.[tf]'``). Layouts: Conv2D
weights HWIO -> OIHW, depthwise (H, W, C, 1) -> (C, 1, H, W); box codes (ty, tx, th, tw) -> (tx, ty, tw, th);
91 class slots, slot 0 background, slot k COCO id k. BatchNorm: gamma, beta, moving mean and variance.
The archive's ``pipeline.config`` (protobuf text) sets the score function, post-processing and input size
(``tf_pipeline_config.py``); a bare ``.pb`` gets the paper's (``tf_config``).
"""

from __future__ import annotations

import logging
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from detector import build, config
from detector.config import Config, DataConfig, LossConfig, ModelConfig, PostprocessConfig
from detector.errors import UserError
from detector.weights.tf_pipeline_config import parse, pipeline_config
from detector.weights.torchvision_ssdlite import coco_categories

log = logging.getLogger(__name__)

FE = "FeatureExtractor/MobilenetV3/"
EXTRA_DEPTHS = (512, 256, 256, 128)
GRAPH_FILE = "frozen_inference_graph.pb"  # the graph's name inside a zoo archive
PIPELINE_FILE = "pipeline.config"  # the model's TF config, beside the graph (detector/weights/tf_pipeline_config.py)

# The paper's TF recipe and model (docs/paper.md, sections 4 and 6): sigmoid scores, score 1e-8, NMS 0.6,
# 100 survivors per class, 100 per image, boxes clipped after NMS (TF's multiclass_non_max_suppression); TF's
# SAME padding and legacy bilinear resize; 90 COCO-id class slots. A zoo archive's pipeline.config overrides.
TF_POSTPROCESS = PostprocessConfig(score_thresh=1e-8, nms_thresh=0.6, topk_per_class=100, max_detections=100,
                                   per_class_limit="after_nms", clip_boxes="after_nms")  # fmt: skip


def tf_config(backbone: str) -> Config:
    """The config of a converted ``mobilenet_v3_large`` / ``mobilenet_v3_small`` († tail) SSDLite."""
    return Config(
        model=ModelConfig(
            backbone=backbone,
            reduced_tail=True,
            layout="paper",
            num_classes=90,
            padding="tf_same",
            se_gate="tf_slim",
            backbone_init_std=0.03,
        ),  # fmt: skip
        loss=LossConfig(kind="focal"),
        postprocess=TF_POSTPROCESS,
        data=DataConfig(class_slots="category_id", resize="tf_legacy"),
    )


def read_archive(path: Path) -> tuple[bytes, tuple[str, str] | None]:
    """(GraphDef bytes, (name, text) of the pipeline.config or None) of a ``.pb`` file (no config), or of a zoo
    archive (``.tar.gz``): its ``*/frozen_inference_graph.pb`` and the ``pipeline.config`` in the same folder,
    if there is one; the config is named ``ARCHIVE:MEMBER``.
    The whole archive is read, so gzip's CRC-32 catches a truncated or damaged download."""
    if not tarfile.is_tarfile(path):
        return path.read_bytes(), None
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()  # reads to the end: the CRC check
            found = [m for m in members if m.isfile() and m.name.rsplit("/", 1)[-1] == GRAPH_FILE]
            if not found:
                raise UserError(f"{path}: an archive without {GRAPH_FILE} (it has {len(members)} entries)")
            folder = found[0].name[: -len(GRAPH_FILE)]
            configs = [m for m in members if m.isfile() and m.name == folder + PIPELINE_FILE]
            text = tar.extractfile(configs[0]).read() if configs else None
            graph = tar.extractfile(found[0]).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{path}: a damaged archive ({exc}); delete it and download it again") from None
    if text is None:
        return graph, None
    name = f"{path}:{configs[0].name}"
    try:
        return graph, (name, text.decode())
    except UnicodeDecodeError:
        raise UserError(f"{name}: not a text file (UTF-8)") from None


def read_consts(path: str | Path, data: bytes | None = None) -> dict[str, np.ndarray]:
    """Every float Const of a frozen GraphDef (a ``.pb`` file or a zoo ``.tar.gz``, or its bytes ``data`` read
    from ``path`` already): node name -> array."""
    try:
        from tensorboard.compat.proto import graph_pb2
        from tensorboard.util import tensor_util
    except ImportError:
        raise UserError("reading TF graphs needs the TF protos that tensorboard ships: pip install '.[tf]'") from None
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(read_archive(Path(path))[0] if data is None else data)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    except UserError:
        raise
    except Exception as exc:  # protobuf's DecodeError
        raise UserError(f"{path}: not a TF GraphDef ({exc})") from None
    consts = {}
    for node in graph.node:
        if node.op == "Const" and "value" in node.attr:
            value = tensor_util.make_ndarray(node.attr["value"].tensor)
            if value.dtype.kind == "f":
                consts[node.name] = value.astype(np.float32)
    if not consts:
        raise UserError(f"{path}: a GraphDef without weights (no float Const)")
    return consts


def _conv_bn(scope: str, ours: str, depthwise: bool = False) -> list[tuple[str, str, str]]:
    weight = ("depthwise_weights", "dw") if depthwise else ("weights", "conv")
    return [(f"{scope}/{weight[0]}", f"{ours}.conv.weight", weight[1])] + [
        (f"{scope}/BatchNorm/{tf}", f"{ours}.bn.{pt}", "vec")
        for tf, pt in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                       ("moving_variance", "running_var"))
    ]  # fmt: skip


def name_map(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    """(TF Const name, our state-dict key, layout) for every weight of a paper-layout MobileNetV3† SSDLite.
    Layouts: conv (HWIO), dw (H, W, C, 1), vec, box_conv / box_vec (codes reordered)."""
    backbone = model.backbone
    rows = _conv_bn(FE + "Conv", "backbone.stem")
    for i, block in enumerate(backbone.blocks):
        scope, ours = FE + ("expanded_conv" if i == 0 else f"expanded_conv_{i}"), f"backbone.blocks.{i}"
        if block.expand is not None:
            rows += _conv_bn(scope + "/expand", ours + ".expand")
        rows += _conv_bn(scope + "/depthwise", ours + ".depthwise", depthwise=True)
        if hasattr(block.se, "reduce"):  # a SqueezeExcite (nn.Identity where the block has none)
            for tf, pt in (("Conv", "reduce"), ("Conv_1", "expand")):
                rows += [(f"{scope}/squeeze_excite/{tf}/weights", f"{ours}.se.{pt}.weight", "conv"),
                         (f"{scope}/squeeze_excite/{tf}/biases", f"{ours}.se.{pt}.bias", "vec")]  # fmt: skip
        rows += _conv_bn(scope + "/project", ours + ".project")
    rows += _conv_bn(FE + "Conv_1", "backbone.last_conv")
    layer = f"layer_{len(backbone.blocks) + 2}"  # C5's layer index in TF's feature-map names (17 Large, 13 Small)
    for k, depth in enumerate(EXTRA_DEPTHS):
        i, half = k + 2, depth // 2
        rows += _conv_bn(f"{FE}{layer}_1_Conv2d_{i}_1x1_{half}", f"extras.{k}.0")
        rows += _conv_bn(f"{FE}{layer}_2_Conv2d_{i}_3x3_s2_{depth}_depthwise", f"extras.{k}.1", depthwise=True)
        rows += _conv_bn(f"{FE}{layer}_2_Conv2d_{i}_3x3_s2_{depth}", f"extras.{k}.2")
    for j in range(len(model.box_heads)):
        for tf, ours, box in (("BoxEncodingPredictor", "box_heads", True), ("ClassPredictor", "cls_heads", False)):
            scope = f"BoxPredictor_{j}/{tf}"
            rows += _conv_bn(scope + "_depthwise", f"{ours}.{j}.0", depthwise=True)
            rows += [(f"{scope}/weights", f"{ours}.{j}.1.weight", "box_conv" if box else "conv"),
                     (f"{scope}/biases", f"{ours}.{j}.1.bias", "box_vec" if box else "vec")]  # fmt: skip
    return rows


def _to_torch(value: np.ndarray, layout: str) -> np.ndarray:
    if layout in ("conv", "box_conv"):
        value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    elif layout == "dw":
        value = value.transpose(2, 3, 0, 1)  # (H, W, C, 1) -> (C, 1, H, W)
    if layout.startswith("box"):  # per anchor (ty, tx, th, tw) -> (tx, ty, tw, th)
        value = value.reshape(-1, 4, *value.shape[1:])[:, [1, 0, 3, 2]].reshape(value.shape)
    return value


def convert(consts: dict[str, np.ndarray], model: torch.nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Our state dict for ``model`` from the Consts of a frozen graph; every weight of the model must be there
    with its shape, else a UserError naming the first node missing or mis-shaped (expected and found shape)."""
    own = model.state_dict()
    state = dict(own)
    for tf_name, key, layout in name_map(model):
        value = consts.get(tf_name)
        if value is None:
            value = consts.get(tf_name + "/read")
        if value is None:
            raise UserError(f"{source}: node {tf_name!r} not found: not an SSDLite MobileNetV3† graph of the paper?")
        value = _to_torch(value, layout)
        if tuple(value.shape) != tuple(own[key].shape):
            expected = tuple(own[key].shape)
            raise UserError(f"{source}: node {tf_name!r} has shape {tuple(value.shape)} (PyTorch layout), "
                            f"expected {expected}")  # fmt: skip
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def backbone_of(consts: dict[str, np.ndarray]) -> str:
    """``mobilenet_v3_large`` or ``mobilenet_v3_small`` by the extra layers' names (layer_17 / layer_13)."""
    if any(n.startswith(FE + "layer_17_") for n in consts):
        return "mobilenet_v3_large"
    if any(n.startswith(FE + "layer_13_") for n in consts):
        return "mobilenet_v3_small"
    first = next(iter(consts))
    raise UserError(f"not an SSDLite MobileNetV3 graph: no {FE}layer_17_* or layer_13_* weights (first: {first!r})")


def graph_checkpoint(path: str | Path, source: str) -> dict:
    """The checkpoint contents (model, config, categories, source) of a frozen graph or zoo archive: the
    paper-layout V3† / V3-Small† with TF's padding and the 90 COCO-id class slots; post-processing, score
    function and input size from the archive's pipeline.config, else the paper's (``tf_config``)."""
    try:
        graph, pipeline = read_archive(Path(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    consts = read_consts(path, graph)
    cfg = tf_config(backbone_of(consts))
    if pipeline is None:
        log.warning("%s: no %s: using the paper's settings (sigmoid scores, score > 1e-8, NMS 0.6, 100 per class, "
                    "100 in all, 320x320)", path, PIPELINE_FILE)  # fmt: skip
    else:
        name, text = pipeline
        cfg = pipeline_config(parse(text, name), cfg, name)
        post = cfg.postprocess
        log.info("%s: %s scores, score > %g, NMS %g, %d per class, %d in all, %dx%d", name, build.score_fn(cfg.loss),
                 post.score_thresh, post.nms_thresh, post.topk_per_class, post.max_detections,
                 *cfg.model.image_size)  # fmt: skip
    model = build.build_model(cfg.model, init=False)
    state = convert(consts, model, str(path))
    return {"model": state, "config": config.to_dict(cfg), "categories": coco_categories(), "source": source}
