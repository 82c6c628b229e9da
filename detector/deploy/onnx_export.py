"""ONNX export: the model's raw outputs, optionally followed by post-processing (NMS) in the graph.

Graphs (N is the batch, fixed at 1 or dynamic; (H, W) the model input size, fixed):

- raw: ``images`` (N, 3, H, W) float32 RGB in [0, 1], already resized ->
  ``boxes`` (N, A, 4) float32 xyxy in input pixels, decoded and clipped, and ``scores`` (N, A, C) float32
  foreground class scores (sigmoid or softmax as trained). The runner does thresholds, top-k and NMS.
- nms: the raw graph followed by our post-processing -> ``det_batch`` (D,) int64 image index in the batch,
  ``det_boxes`` (D, 4) float32 xyxy input pixels, ``det_scores`` (D,) float32, ``det_labels`` (D,) int64
  1..C; image by image, best first. ONNX ``NonMaxSuppression`` does the per-class NMS.

The file carries everything a runner needs in ``metadata_props`` (see ``metadata``): input size, score
function, post-processing settings and categories, so ``detector.deploy.onnx_runtime`` needs nothing else.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import onnx
import onnx.compose
import onnx.version_converter
import torch
from torch import nn
from torchvision.ops import nms

from detector.config import Config, to_dict
from detector.deploy.fuse import fuse_for_inference
from detector.ssd.postprocess import PostProcessor

FORMAT = "detector-onnx/1"
OPSET = 17
RAW_OUTPUTS = ("boxes", "scores")
NMS_OUTPUTS = ("det_batch", "det_boxes", "det_scores", "det_labels")


class RawOutputs(nn.Module):
    """images (N, 3, H, W) float in [0, 1] -> (boxes (N, A, 4) xyxy input pixels, scores (N, A, C))."""

    def __init__(self, model: nn.Module, post: PostProcessor) -> None:
        super().__init__()
        self.model, self.post = model, post

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, logits = self.model(images)
        return self.post.boxes(codes), self.post.scores(logits)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset 10+): boxes (N, A, 4), scores (N, C, A) -> (K, 3) int64
    (image, class, box) rows of the kept boxes, per class at most ``max_per_class``, scores > ``score_thresh``.

    ``forward`` is a reference in PyTorch, used only while tracing; the exported graph runs the ONNX operator.
    It loops over classes with ``nms``: ``batched_nms`` while tracing scripts its one-NMS-for-all-classes path,
    quadratic in the candidates (about 2 minutes for V3† at score 0.001, 180,000 candidates).
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_thresh: float, score_thresh: float):
        rows = []
        for b in range(scores.shape[0]):
            cls, box = torch.nonzero(scores[b] > score_thresh, as_tuple=True)
            for c in cls.unique():
                mine = torch.nonzero(cls == c).flatten()
                picked = mine[nms(boxes[b, box[mine]], scores[b, c, box[mine]], iou_thresh)][:max_per_class]
                rows.append(torch.stack([torch.full_like(picked, b), cls[picked], box[picked]], 1))
        return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_thresh: float, score_thresh: float):
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_thresh], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_thresh], dtype=torch.float32)),
        )


class NmsOutputs(nn.Module):
    """Our ``PostProcessor.select`` as graph operations, batched.

    (boxes (N, A, 4), scores (N, A, C)) -> (det_batch, det_boxes, det_scores, det_labels) as in the module
    docstring. ``before_nms``: per class only the ``topk_per_class`` best scores enter NMS (the others are set
    to -1, below any threshold); ``after_nms``: all enter and NMS keeps up to ``topk_per_class`` per class
    (ONNX's ``max_output_boxes_per_class`` means exactly that). NMS keeps scores > ``score_thresh``, then each
    image keeps its ``max_detections`` best.
    Equal to ``PostProcessor`` up to ties and float rounding of the IoUs.
    """

    def __init__(self, post: PostProcessor, num_anchors: int) -> None:
        super().__init__()
        self.post = post
        # A Python int, not the traced shape: it becomes constants of the graph (top-k size, NMS limit).
        self.k = min(post.topk_per_class, num_anchors)

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p, k = self.post, self.k
        per_class = scores.transpose(1, 2)  # (N, C, A)
        if p.per_class_limit == "before_nms":
            kth = per_class.topk(k, dim=2).values[..., -1:]
            per_class = torch.where(per_class >= kth, per_class, torch.full_like(per_class, -1.0))
        sel = _NonMaxSuppression.apply(boxes, per_class, k, p.nms_thresh, p.score_thresh)
        image, cls, box = sel[:, 0], sel[:, 1], sel[:, 2]
        det_scores = per_class[image, cls, box]
        det_boxes = boxes[image, box]
        # image-major, best first: scores are in [0, 1], so image * 4 - score sorts by image, then by score
        order = torch.argsort(image.to(det_scores.dtype) * 4.0 - det_scores)
        image, cls, det_scores, det_boxes = image[order], cls[order], det_scores[order], det_boxes[order]
        counts = (image[:, None] == torch.arange(scores.shape[0])[None, :]).sum(0)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(image.shape[0]) - starts[image]
        keep = rank < p.max_detections
        return image[keep], det_boxes[keep], det_scores[keep], cls[keep] + 1


def metadata(
    cfg: Config, post: PostProcessor, categories: list[dict], outputs: str, precision: str, source: str
) -> dict[str, str]:
    """The ``metadata_props`` of our ONNX files (all values are strings; JSON where structured)."""
    return {
        "detector.format": FORMAT,
        "detector.outputs": outputs,
        "detector.precision": precision,
        "detector.input_size": json.dumps(list(post.input_size)),
        "detector.score_fn": post.score_fn,
        "detector.postprocess": json.dumps(
            {
                "score_thresh": post.score_thresh,
                "nms_thresh": post.nms_thresh,
                "topk_per_class": post.topk_per_class,
                "max_detections": post.max_detections,
                "per_class_limit": post.per_class_limit,
            }
        ),
        "detector.categories": json.dumps(categories),
        "detector.config": json.dumps(to_dict(cfg)),
        "detector.source": source,
    }


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def _export(
    module: nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]] | None,
) -> None:
    # The TorchScript-based exporter (dynamo=False): the dynamo one needs onnxscript and has no NMS symbolic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def export_raw(model: nn.Module, post: PostProcessor, path: str | Path, dynamic_batch: bool = False) -> None:
    """Write the raw graph of ``model`` (BatchNorm folded first) to ``path`` (no metadata)."""
    wrapper = RawOutputs(fuse_for_inference(model), post).eval()
    h, w = model.image_size
    dynamic = {name: {0: "batch"} for name in ("images", *RAW_OUTPUTS)} if dynamic_batch else None
    _export(wrapper, (torch.rand(1, 3, h, w),), Path(path), ["images"], list(RAW_OUTPUTS), dynamic)


def export_nms_graph(
    post: PostProcessor, num_anchors: int, num_classes: int, path: str | Path, dynamic_batch: bool
) -> None:
    """Write the post-processing graph alone: (boxes, scores) -> NMS outputs."""
    xy = torch.rand(1, num_anchors, 2) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(1, num_anchors, 2) * 50], -1)
    scores = torch.rand(1, num_anchors, num_classes)
    dynamic = {name: {0: "batch"} for name in RAW_OUTPUTS} if dynamic_batch else {}
    dynamic.update({name: {0: "detections"} for name in NMS_OUTPUTS})
    module = NmsOutputs(post, num_anchors).eval()
    _export(module, (boxes, scores), Path(path), list(RAW_OUTPUTS), list(NMS_OUTPUTS), dynamic)


def append_nms(raw: onnx.ModelProto, post: PostProcessor, dynamic_batch: bool) -> onnx.ModelProto:
    """``raw`` (fp32 or quantised) followed by the NMS graph, as one model."""
    boxes_shape = raw.graph.output[1].type.tensor_type.shape.dim
    num_anchors, num_classes = boxes_shape[1].dim_value, boxes_shape[2].dim_value
    with tempfile.TemporaryDirectory() as tmp:
        export_nms_graph(post, num_anchors, num_classes, Path(tmp) / "nms.onnx", dynamic_batch)
        nms = onnx.load(str(Path(tmp) / "nms.onnx"))
    nms = onnx.compose.add_prefix(nms, "post/", rename_inputs=False, rename_outputs=False)
    raw_domains = {op.domain: op.version for op in raw.opset_import}
    if raw_domains.get("", OPSET) != OPSET:  # the quantiser may raise the default-domain opset
        nms = onnx.version_converter.convert_version(nms, raw_domains[""])
    nms.ir_version = raw.ir_version
    for op in raw.opset_import:
        if op.domain not in {o.domain for o in nms.opset_import}:
            nms.opset_import.add(domain=op.domain, version=op.version)
    merged = onnx.compose.merge_models(raw, nms, io_map=[(n, n) for n in RAW_OUTPUTS], outputs=list(NMS_OUTPUTS))
    return merged


def save(model: onnx.ModelProto, path: str | Path, props: dict[str, str]) -> None:
    """Attach ``props`` as metadata, check the model and write it."""
    set_metadata(model, props)
    onnx.checker.check_model(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
