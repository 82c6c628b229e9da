"""The two SSDLite training losses. Both take the model's raw outputs and per-anchor match results.

Inputs shared by both:
    box_regression: (N, A, 4) float codes (dx, dy, dw, dh), see ``BoxCoder``.
    class_logits:   (N, A, K) float, K = num_classes + 1; slot 0 is the background slot.
    anchors:        (A, 4) float xyxy pixels.
    targets:        list of N dicts with ``boxes`` (M, 4) float xyxy pixels of the model input,
                    ``labels`` (M,) int64 in 1..num_classes and optionally ``crowd_boxes`` (G, 4).
Both return a dict of scalar tensors: ``box``, ``cls`` and their sum ``total``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detector.ssd.box_coder import BoxCoder
from detector.ssd.matcher import IGNORE, Matcher


def match_targets(
    targets: list[dict[str, torch.Tensor]], anchors: torch.Tensor, matcher: Matcher, coder: BoxCoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor targets: labels (N, A) int64 (0 background, -1 ignored) and box codes (N, A, 4)."""
    labels, codes = [], []
    for t in targets:
        m = matcher(t["boxes"], anchors, t.get("crowd_boxes"))
        gt = m.clamp(min=0)
        if t["boxes"].numel():
            lab = torch.where(m >= 0, t["labels"][gt], torch.zeros_like(m))
            code = coder.encode(t["boxes"][gt], anchors)
        else:
            lab, code = torch.zeros_like(m), torch.zeros_like(anchors)
        labels.append(torch.where(m == IGNORE, torch.full_like(lab, -1), lab))
        codes.append(code)
    return torch.stack(labels), torch.stack(codes)


class _SSDLoss:
    """Matching shared by both losses; subclasses implement ``compute``.

    ``loss(box_regression, class_logits, anchors, targets)`` matches, normalises and computes in one call. The
    training step calls the parts: ``match`` on the whole step's targets first (matching needs only anchors and
    boxes), the normaliser of the whole global batch, then ``compute`` per micro-batch on its slice of the
    matches; the micro-batch losses then add up to the whole batch's loss, and so do their gradients."""

    def __init__(self, iou_threshold: float) -> None:
        self.matcher, self.coder = Matcher(iou_threshold), BoxCoder()

    def __call__(self, box_regression, class_logits, anchors, targets) -> dict[str, torch.Tensor]:
        labels, codes = self.match(targets, anchors)
        return self.compute(box_regression, class_logits, labels, codes, matched_anchor_normalizer(labels))

    def match(self, targets: list[dict[str, torch.Tensor]], anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-anchor labels (N, A) int64 (0 background, -1 ignored) and box codes (N, A, 4) float."""
        return match_targets(targets, anchors, self.matcher, self.coder)


def matched_anchor_normalizer(labels: torch.Tensor) -> float:
    """The loss normaliser: matched anchors of the whole batch, over all processes, divided by the number of
    processes (at least 1 / processes). Each process divides its loss sum by it and DistributedDataParallel
    averages the gradients, so N processes compute what one would on the global batch."""
    count, processes = (labels > 0).sum().double(), 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        processes = dist.get_world_size()
    return max(1.0, count.item()) / processes


class FocalLoss(_SSDLoss):
    """The paper's loss (TF config): sigmoid focal classification (alpha 0.75 on positive entries, 0.25 on
    negative ones, gamma 2, background encoded as all-zeros over every slot) plus Smooth L1 (delta 1) on the
    codes divided by the code size (4); both summed and divided by the number of matched anchors."""

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0, iou_threshold: float = 0.5) -> None:
        super().__init__(iou_threshold)
        self.alpha, self.gamma = alpha, gamma

    def compute(self, box_regression, class_logits, labels, codes, num_pos: float) -> dict[str, torch.Tensor]:
        """Losses given matched targets (labels (N, A), codes (N, A, 4)), divided by ``num_pos``
        (``matched_anchor_normalizer``)."""
        positive = labels > 0
        valid = labels >= 0
        onehot = F.one_hot(labels.clamp(min=0), class_logits.shape[-1]).to(class_logits.dtype)
        onehot[..., 0] = 0  # background is all-zeros, the background slot is never a positive
        cls = sigmoid_focal_loss(class_logits[valid], onehot[valid], self.alpha, self.gamma, "sum") / num_pos
        box = F.smooth_l1_loss(box_regression[positive], codes[positive], reduction="sum", beta=1.0)
        box = box / codes.shape[-1] / num_pos
        return {"box": box, "cls": cls, "total": box + cls}


class HardNegativeSoftmaxLoss(_SSDLoss):
    """torchvision's SSD loss: softmax cross-entropy over all K slots with 3:1 hard negative mining per image,
    plus Smooth L1 (beta 1) summed over the codes; both divided by the number of matched anchors."""

    def __init__(self, neg_to_pos: int = 3, iou_threshold: float = 0.5) -> None:
        super().__init__(iou_threshold)
        self.neg_to_pos = neg_to_pos

    def compute(self, box_regression, class_logits, labels, codes, num_pos: float) -> dict[str, torch.Tensor]:
        """Losses given matched targets; ``num_pos`` as in ``FocalLoss.compute``."""
        positive = labels > 0
        box = F.smooth_l1_loss(box_regression[positive], codes[positive], reduction="sum", beta=1.0) / num_pos
        ce = F.cross_entropy(class_logits.flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none").view_as(
            labels
        )
        # Hard negatives: the highest-loss background anchors, neg_to_pos per positive of the same image.
        negative_loss = ce.masked_fill(labels != 0, -float("inf"))
        order = negative_loss.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        negative = (rank < self.neg_to_pos * positive.sum(1, keepdim=True)) & (labels == 0)
        cls = (ce[positive].sum() + ce[negative].sum()) / num_pos
        return {"box": box, "cls": cls, "total": box + cls}
