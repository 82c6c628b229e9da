"""The graphs every export traces: the model's raw outputs, and our post-processing as graph operations.

``RawOutputs``: images (N, 3, H, W) float32 in [0, 1] -> (boxes (N, A, 4) xyxy input pixels, scores (N, A, C)),
the raw graph of every format; the boxes are the ones NMS sees (``PostProcessor.boxes``: clipped, or not with
TF's ``clip_boxes="after_nms"``). ``NmsOutputs``: those -> the NMS outputs of ``detector.deploy.exported``, with
ONNX's ``NonMaxSuppression`` doing the per-class NMS (the ONNX NMS graph).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import nms

from detector.ssd.postprocess import PostProcessor


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
    (ONNX's ``max_output_boxes_per_class`` means exactly that). NMS keeps scores > ``score_thresh``; with
    ``clip_boxes="after_nms"`` (TF) the survivors are then clipped and those of zero area dropped; then each
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
        if p.clip_boxes == "after_nms":
            det_boxes, nonzero = p.clip_and_prune(det_boxes)
            image, cls, det_scores, det_boxes = image[nonzero], cls[nonzero], det_scores[nonzero], det_boxes[nonzero]
        # image-major, best first: scores are in [0, 1], so image * 4 - score sorts by image, then by score
        order = torch.argsort(image.to(det_scores.dtype) * 4.0 - det_scores)
        image, cls, det_scores, det_boxes = image[order], cls[order], det_scores[order], det_boxes[order]
        counts = (image[:, None] == torch.arange(scores.shape[0])[None, :]).sum(0)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(image.shape[0]) - starts[image]
        keep = rank < p.max_detections
        return image[keep], det_boxes[keep], det_scores[keep], cls[keep] + 1
