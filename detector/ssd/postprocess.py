"""Post-processing: decode, score threshold, per-class top-k, per-class NMS, total limit.

Vectorised over classes: one ``topk`` over the flattened (anchor, class) scores and one coordinate-offset
``torchvision.ops.nms`` call per image, no Python loop over classes; only the candidates' boxes are decoded.
Greedy NMS decides a box only from the boxes scored above it, so NMS over the M best candidates gives exactly
the first survivors of NMS over all; M starts at four times the detection limit and doubles until enough boxes
survive or all are in. The result equals the straightforward loop (threshold, top-k and NMS class by class,
then the best ``max_detections``).
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
        results = []
        for i in range(box_regression.shape[0]):
            det = self.select(box_regression[i], class_logits[i], anchors, input_size)
            if image_sizes is not None:
                (h, w), (in_h, in_w) = image_sizes[i], input_size
                det["boxes"] = det["boxes"] * det["boxes"].new_tensor([w / in_w, h / in_h, w / in_w, h / in_h])
            results.append(det)
        return results

    def select(
        self, codes: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor, input_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """One image from raw outputs: codes (A, 4), logits (A, K), anchors (A, 4) -> detections (labels 1..K-1).

        Candidates are ranked without computing every score where the score function allows it (sigmoid is
        monotonic: logits rank as scores do); only the candidates' boxes are decoded.
        """
        ranked = logits.softmax(-1) if self.score_fn == "softmax" else logits.clone()
        ranked[:, 0] = -float("inf")  # the background slot is never a detection
        to_scores = (lambda v: v) if self.score_fn == "softmax" else torch.sigmoid
        return self._select(
            ranked.view(-1), logits.shape[1], 0, to_scores, lambda a: self.boxes(codes[a], anchors[a], input_size)
        )

    def select_boxes(self, boxes: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """One image from decoded outputs (e.g. an exported graph): boxes (A, 4) xyxy, foreground scores (A, C)."""
        return self._select(scores.reshape(-1), scores.shape[1], 1, lambda v: v, lambda a: boxes[a])

    def _select(self, flat: torch.Tensor, num_cols: int, label_offset: int, to_scores, boxes_of) -> dict:
        """Threshold, per-class top-k and NMS over ``flat`` = (A * num_cols,) values ranked like the scores;
        column c is label c + label_offset; ``boxes_of(anchor indices)`` gives their boxes."""
        m = min(flat.numel(), max(4 * self.max_detections, 256))
        while True:
            values, idx = flat.topk(m)  # sorted, best first
            scores = to_scores(values)
            valid = int((scores > self.score_thresh).sum())  # a prefix: scores are sorted
            exhausted = valid < m or m == flat.numel()
            anchor, cls = idx[:valid] // num_cols, idx[:valid] % num_cols + label_offset
            # Rank of each candidate within its class (among the m best = among all, since sorted).
            order = torch.sort(cls, stable=True).indices
            sorted_cls = cls[order]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(valid, device=order.device) - torch.searchsorted(sorted_cls, sorted_cls)
            keep = rank < self.topk_per_class
            cand_scores, cand_cls = scores[:valid][keep], cls[keep]
            cand_boxes = boxes_of(anchor[keep])
            # One NMS over all classes: offset each class's boxes so that classes never overlap.
            # float64 keeps the IoUs of the offset boxes as exact as those of the plain boxes.
            shifted = cand_boxes.double()
            shifted = shifted + cand_cls.double()[:, None] * (shifted.max() + 1 if shifted.numel() else 1)
            kept = nms(shifted, cand_scores.double(), self.nms_thresh)
            if kept.numel() >= self.max_detections or exhausted:
                break
            m = min(flat.numel(), 2 * m)
        kept = kept[: self.max_detections]
        return {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_cls[kept]}
