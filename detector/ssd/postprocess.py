"""Post-processing: decode, score threshold, per-class top-k, per-class NMS, total limit.

Vectorised over classes: one ``topk`` over the flattened (anchor, class) scores and one coordinate-offset
``torchvision.ops.nms`` call per image, no Python loop over classes. Greedy NMS decides a box only from the
boxes scored above it, so NMS over the M best candidates gives exactly the first survivors of NMS over all;
M starts at a few times the detection limit and doubles until enough boxes survive or all are in. The result
equals the straightforward loop (threshold, top-k and NMS class by class, then the best ``max_detections``).
"""

from __future__ import annotations

import torch
from torchvision.ops import nms

from detector.ssd.box_coder import BoxCoder


class PostProcessor:
    """Raw outputs -> detections.

    Args:
        score_fn: ``"sigmoid"`` (paper layout) or ``"softmax"`` (torchvision layout, background in slot 0).
        score_thresh: keep scores strictly above it.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        topk_per_class: best candidates per class entering NMS.
        max_detections: detections kept per image.
    """

    def __init__(
        self,
        score_fn: str = "sigmoid",
        score_thresh: float = 1e-8,
        nms_thresh: float = 0.6,
        topk_per_class: int = 100,
        max_detections: int = 100,
        coder: BoxCoder | None = None,
    ) -> None:
        if score_fn not in ("sigmoid", "softmax"):
            raise ValueError(f"unknown score_fn {score_fn!r}; expected 'sigmoid' or 'softmax'")
        self.score_fn = score_fn
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_per_class, self.max_detections = topk_per_class, max_detections
        self.coder = coder or BoxCoder()

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """(N, A, K) logits -> (N, A, K - 1) foreground class scores in [0, 1]."""
        if self.score_fn == "softmax":
            return class_logits.softmax(-1)[..., 1:]
        return class_logits[..., 1:].sigmoid()

    def boxes(self, box_regression: torch.Tensor, anchors: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """(N, A, 4) codes -> (N, A, 4) xyxy boxes in input pixels, clipped to the input."""
        boxes = self.coder.decode(box_regression, anchors)
        h, w = input_size
        return torch.stack(
            [
                boxes[..., 0].clamp(0, w),
                boxes[..., 1].clamp(0, h),
                boxes[..., 2].clamp(0, w),
                boxes[..., 3].clamp(0, h),
            ],
            -1,
        )

    def __call__(
        self,
        box_regression: torch.Tensor,
        class_logits: torch.Tensor,
        anchors: torch.Tensor,
        input_size: tuple[int, int],
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``boxes`` (D, 4) float32 xyxy, ``scores`` (D,), ``labels`` (D,) int64 in
        1..num_classes, best first. Boxes are in pixels of ``image_sizes[i]`` = (H, W) of each original image
        (the input is a plain resize of it), or of the model input when ``image_sizes`` is None."""
        boxes = self.boxes(box_regression, anchors, input_size)
        scores = self.scores(class_logits)
        results = []
        for i in range(boxes.shape[0]):
            det = self.select(boxes[i], scores[i])
            if image_sizes is not None:
                (h, w), (in_h, in_w) = image_sizes[i], input_size
                det["boxes"] = det["boxes"] * det["boxes"].new_tensor([w / in_w, h / in_h, w / in_w, h / in_h])
            results.append(det)
        return results

    def select(self, boxes: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """One image: boxes (A, 4), scores (A, C) -> the kept detections (labels 1..C)."""
        num_classes = scores.shape[1]
        flat = scores.flatten()
        total = int((flat > self.score_thresh).sum())
        m = min(total, max(4 * self.max_detections, 1024))
        while True:
            top_scores, top_idx = flat.topk(m)  # sorted, best first
            anchor, cls = top_idx // num_classes, top_idx % num_classes
            # Rank of each candidate within its class (among the m best = among all, since sorted).
            order = torch.sort(cls, stable=True).indices
            sorted_cls = cls[order]
            first = torch.searchsorted(sorted_cls, sorted_cls, right=False)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(m, device=order.device) - first
            keep = rank < self.topk_per_class
            cand_boxes, cand_scores, cand_cls = boxes[anchor[keep]], top_scores[keep], cls[keep]
            # One NMS over all classes: offset each class's boxes so that classes never overlap.
            # float64 keeps the IoUs of the offset boxes as exact as those of the plain float32 ones.
            shifted = cand_boxes.double()
            shifted = shifted + cand_cls.double()[:, None] * (shifted.max() + 1 if shifted.numel() else 1)
            kept = nms(shifted, cand_scores.double(), self.nms_thresh)
            if kept.numel() >= self.max_detections or m == total:
                break
            m = min(total, 2 * m)
        kept = kept[: self.max_detections]
        return {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_cls[kept] + 1}
