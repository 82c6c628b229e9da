"""Post-processing: decode, score threshold, per-class limit, per-class NMS, clip, total limit.

Two meanings of the per-class limit ``topk_per_class``: ``before_nms`` (torchvision) lets the best k candidates
of each class enter NMS; ``after_nms`` (TF's ``max_detections_per_class``, the paper's recipe) lets every
candidate above the threshold enter NMS and keeps the best k survivors of each class, so a crowded class
(many people) keeps its boxes.

Two places for clipping the boxes to the input, ``clip_boxes``: ``before_nms`` (torchvision) clips the decoded
boxes and runs NMS on them; ``after_nms`` (TF's ``multiclass_non_max_suppression``, the paper's models) runs NMS
and the per-class limit on the unclipped boxes, then clips the survivors, drops those of zero area (boxes
wholly outside the input) and then keeps the best ``max_detections``. The two differ for boxes that cross the
border: clipping changes their IoUs.

Vectorised over classes: one ``topk`` over the flattened (anchor, class) scores and coordinate-offset
``torchvision.ops.nms`` calls over groups of whole classes, no Python loop over classes; only the candidates'
boxes are decoded.
Greedy NMS decides a box only from the boxes scored above it, so NMS over the M best candidates gives exactly
the first survivors of NMS over all; M starts at four times the detection limit and doubles until enough boxes
survive or all are in. The result equals the straightforward loop (threshold, top-k and NMS class by class,
then the best ``max_detections``), in either meaning of the per-class limit.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import box_area, nms

from detector.ssd.box_coder import BoxCoder

# Candidate selection (PostProcessor._best): a 1-in-SAMPLE_STRIDE sample chooses the route (a prime stride,
# so that the sample does not fall on a few class columns); the threshold goes first when under
# THRESHOLD_FIRST of the values pass (measured on a CPU core: masking 294k values costs what a top-k over
# 5-10 % of them does). SAMPLED_ROUTES = False always ranks every value.
SAMPLE_STRIDE = 61
THRESHOLD_FIRST = 0.05
SAMPLED_ROUTES = True
# Candidates per NMS call when there are many (see PostProcessor._nms): 200-300 measured best on a CPU core.
NMS_GROUP = 256
PER_CLASS_LIMITS = ("before_nms", "after_nms")
CLIP_PLACES = ("before_nms", "after_nms")


class PostProcessor:
    """Raw outputs -> detections, for one model input size and anchor set.

    Args:
        score_fn: ``"sigmoid"`` (paper layout) or ``"softmax"`` (torchvision layout, background in slot 0).
        score_thresh: keep scores strictly above it.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        topk_per_class: per class, the best candidates entering NMS (``before_nms``) or the best survivors
            of NMS kept (``after_nms``).
        max_detections: detections kept per image.
        input_size: (H, W) of the model input, the pixels the boxes are decoded in.
        anchors: (A, 4) float xyxy input pixels (the model's ``anchors``); None for a post-processor that only
            takes decoded boxes (``select_boxes``, e.g. behind an exported graph that decodes them itself).
        per_class_limit: ``"before_nms"`` or ``"after_nms"`` (see the module docstring).
        clip_boxes: ``"before_nms"`` or ``"after_nms"`` (see the module docstring).
    """

    def __init__(
        self,
        score_fn: str,
        score_thresh: float,
        nms_thresh: float,
        topk_per_class: int,
        max_detections: int,
        input_size: tuple[int, int],
        anchors: torch.Tensor | None = None,
        per_class_limit: str = "before_nms",
        clip_boxes: str = "before_nms",
    ) -> None:
        if score_fn not in ("sigmoid", "softmax"):
            raise ValueError(f"unknown score_fn {score_fn!r}; expected 'sigmoid' or 'softmax'")
        if per_class_limit not in PER_CLASS_LIMITS:
            raise ValueError(f"unknown per_class_limit {per_class_limit!r}; expected one of {PER_CLASS_LIMITS}")
        if clip_boxes not in CLIP_PLACES:
            raise ValueError(f"unknown clip_boxes {clip_boxes!r}; expected one of {CLIP_PLACES}")
        self.per_class_limit, self.clip_boxes = per_class_limit, clip_boxes
        self.score_fn = score_fn
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_per_class, self.max_detections = topk_per_class, max_detections
        self.input_size = input_size
        self.anchors = anchors
        self.coder = BoxCoder()

    def _anchors_like(self, codes: torch.Tensor) -> torch.Tensor:
        if self.anchors is None:
            raise ValueError("this post-processor has no anchors: it takes decoded boxes only (select_boxes)")
        if self.anchors.device != codes.device or self.anchors.dtype != codes.dtype:
            self.anchors = self.anchors.to(codes.device, codes.dtype)  # once, on the first call
        return self.anchors

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """(N, A, K) logits -> (N, A, K - 1) foreground class scores in [0, 1]."""
        if self.score_fn == "softmax":
            return class_logits.softmax(-1)[..., 1:]
        return class_logits[..., 1:].sigmoid()

    def boxes(self, box_regression: torch.Tensor, anchor_index: torch.Tensor | None = None) -> torch.Tensor:
        """(..., A, 4) codes -> (..., A, 4) xyxy boxes in input pixels, the ones NMS sees: clipped to the input
        with ``clip_boxes="before_nms"``, as decoded with ``"after_nms"``; with ``anchor_index`` the codes are
        those of these anchors only."""
        anchors = self._anchors_like(box_regression)
        if anchor_index is not None:
            anchors = anchors[anchor_index]
        boxes = self.coder.decode(box_regression, anchors)
        return self.clip(boxes) if self.clip_boxes == "before_nms" else boxes

    def clip(self, boxes: torch.Tensor) -> torch.Tensor:
        """(..., 4) xyxy input pixels -> the same clipped to the input's [0, W] x [0, H]."""
        h, w = self.input_size
        limits = boxes.new_tensor([[0, 0, 0, 0], [w, h, w, h]])
        return boxes.clamp(limits[0], limits[1])

    def clip_and_prune(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TF's ``_clip_window_prune_boxes``: (D, 4) xyxy input pixels -> (the boxes clipped to the input,
        (D,) bool: those of non-zero area after clipping, i.e. not wholly outside)."""
        clipped = self.clip(boxes)
        return clipped, box_area(clipped) > 0

    def __call__(
        self,
        box_regression: torch.Tensor,
        class_logits: torch.Tensor,
        image_sizes: list[tuple[int, int]] | None = None,
        min_score: float = 0.0,
    ) -> list[dict[str, torch.Tensor]]:
        """The model's raw outputs, box codes (N, A, 4) and class logits (N, A, K) -> detections per image:
        ``boxes`` (D, 4) float32 xyxy, ``scores`` (D,), ``labels`` (D,) int64 in 1..num_classes, best first.
        Boxes are in pixels of ``image_sizes[i]`` = (H, W) of each original image (the input is a plain resize
        of it), or of the model input when ``image_sizes`` is None.

        ``min_score``: only candidates scored at least this enter NMS. The result is exactly the detections of
        at least ``min_score`` that filtering afterwards keeps (NMS suppresses a box only by higher-scored ones,
        and each limit keeps the best: those of at least ``min_score`` are a prefix of every ranking), with far
        less work at a caller's display threshold (0.3) than at a model's own (1e-8)."""
        results = []
        for i in range(box_regression.shape[0]):
            det = self.select(box_regression[i], class_logits[i], min_score)
            if image_sizes is not None:
                det["boxes"] = self.to_image(det["boxes"], image_sizes[i])
            results.append(det)
        return results

    def to_image(self, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(D, 4) xyxy boxes in input pixels -> pixels of the (H, W) image the input was resized from."""
        (h, w), (in_h, in_w) = image_size, self.input_size
        return boxes * boxes.new_tensor([w / in_w, h / in_h, w / in_w, h / in_h])

    def select(self, codes: torch.Tensor, logits: torch.Tensor, min_score: float = 0.0) -> dict[str, torch.Tensor]:
        """One image from raw outputs: codes (A, 4), logits (A, K) -> detections in input pixels (labels 1..K-1),
        of scores above ``score_thresh`` and at least ``min_score`` (see ``__call__``).

        Candidates are ranked without computing every score where the score function allows it (sigmoid is
        monotonic: logits rank as scores do); only the candidates' boxes are decoded.
        """
        if self.score_fn == "softmax":
            ranked, to_scores, floor = logits.softmax(-1), (lambda v: v), self._floor(min_score)
        else:
            # sigmoid(x) > t exactly when x > logit(t); the margin absorbs rounding, the exact test comes later.
            t = min(max(self.score_thresh, 0.0), 1.0)
            floor = math.log(t / (1 - t)) - 1e-3 if 0 < t < 1 else (-math.inf if t <= 0 else math.inf)
            if min_score > 0:  # sigmoid(x) >= m needs x >= logit(m); float32 sigmoid is 1 from x = 16.6 on
                floor = max(floor, math.log(min_score / (1 - min_score)) - 1e-3 if min_score < 1 else 15.0)
            ranked, to_scores = logits.clone(), torch.sigmoid
        ranked[:, 0] = -math.inf  # the background slot is never a detection
        return self._select(
            ranked.view(-1),
            logits.shape[1],
            0,
            to_scores,
            floor,
            lambda a: self.boxes(codes[a], a),
            min_score,
        )

    def select_boxes(
        self, boxes: torch.Tensor, scores: torch.Tensor, min_score: float = 0.0
    ) -> dict[str, torch.Tensor]:
        """One image from decoded outputs (e.g. an exported graph): boxes (A, 4) xyxy, foreground scores (A, C);
        ``min_score`` as in ``__call__``."""
        flat, floor = scores.reshape(-1), self._floor(min_score)
        return self._select(flat, scores.shape[1], 1, lambda v: v, floor, lambda a: boxes[a], min_score)

    def _floor(self, min_score: float) -> float:
        """A value that no score passing both thresholds reaches or falls below (scores ranked as themselves)."""
        return max(self.score_thresh, min_score - 1e-6)

    def _select(self, flat: torch.Tensor, num_cols: int, label_offset: int, to_scores, floor: float, boxes_of,
                min_score: float = 0.0):  # fmt: skip
        """Threshold, per-class top-k and NMS over ``flat`` = (A * num_cols,) values ranked like the scores;
        column c is label c + label_offset; no value at or below ``floor`` passes the score thresholds (above
        ``score_thresh``, at least ``min_score``); ``boxes_of(anchor indices)`` gives their boxes."""
        m = min(flat.numel(), max(4 * self.max_detections, 256))
        while True:
            values, idx = self._best(flat, m, floor)  # sorted, best first
            scores = to_scores(values)
            valid = int(((scores > self.score_thresh) & (scores >= min_score)).sum())  # a prefix: scores are sorted
            exhausted = valid < m or m == flat.numel()
            scores, idx = scores[:valid], idx[:valid]
            anchor = idx.div(num_cols, rounding_mode="floor")
            cls = idx.remainder(num_cols)
            if label_offset:
                cls += label_offset
            before = self.per_class_limit == "before_nms"
            if before and valid > self.topk_per_class and int(torch.bincount(cls).max()) > self.topk_per_class:
                keep = self._class_rank(cls) < self.topk_per_class
                scores, cls, anchor = scores[keep], cls[keep], anchor[keep]
            boxes = boxes_of(anchor)
            kept = self._nms(boxes, scores, cls)
            if not before and kept.numel() > self.topk_per_class:  # survivors are in score order
                kept = kept[self._class_rank(cls[kept]) < self.topk_per_class]
            kept_boxes = boxes[kept]
            if self.clip_boxes == "after_nms":  # TF: clip the survivors, drop those of zero area
                kept_boxes, nonzero = self.clip_and_prune(kept_boxes)
                kept, kept_boxes = kept[nonzero], kept_boxes[nonzero]
            if kept.numel() >= self.max_detections or exhausted:
                break
            m = min(flat.numel(), 2 * m)
        n = self.max_detections
        return {"boxes": kept_boxes[:n], "scores": scores[kept[:n]], "labels": cls[kept[:n]]}

    @staticmethod
    def _best(flat: torch.Tensor, m: int, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``m`` largest values of ``flat`` above ``floor`` (fewer if fewer are), best first, and their
        indices (values at or below ``floor`` may come too; the caller drops them).

        A top-k over all A * K values costs about 4 ns per value on a CPU core, so a strided sample picks a
        cheaper exact route first: when few values pass the threshold (trained models at 0.001), those alone
        are ranked; otherwise the sample's ``2m / stride``-th largest value bounds the m-th largest of all
        from below, and only the values at or above it are ranked. Masses of equal values (untrained models)
        defeat the bound; the sample shows them too, and the full top-k runs. The answer is exact whatever
        the sample says: it only picks the route.
        """
        n = flat.numel()
        if n <= 8 * m or not SAMPLED_ROUTES:
            return flat.topk(m)
        sample = flat[::SAMPLE_STRIDE]
        if int((sample > floor).sum()) * SAMPLE_STRIDE < n * THRESHOLD_FIRST:
            idx = (flat > floor).nonzero().squeeze(1)
            values, best = flat[idx].topk(min(m, idx.numel()))
            return values, idx[best]
        top = sample.topk(2 * m // SAMPLE_STRIDE + 1).values
        if top[0] > top[-1]:  # not an untrained model's sea of equal values
            mask = flat >= top[-1]
            if m <= int(mask.sum()) <= 8 * m:  # else the sample misled us (possible, if unlikely)
                idx = mask.nonzero().squeeze(1)
                values, best = flat[idx].topk(m)
                return values, idx[best]
        return flat.topk(m)

    def _nms(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-class NMS of candidates ordered best first: boxes (M, 4), scores (M,), labels (M,) int64 ->
        indices of the survivors, best first.

        Each class's boxes are offset so that classes never overlap: first all moved to non-negative
        coordinates (unclipped boxes, ``clip_boxes="after_nms"``, reach below 0; IoUs do not change under a
        translation), then class c by c times the span of all. float64 keeps the IoUs of the offset boxes as
        exact as those of the plain boxes. NMS compares every kept box with every lower-scored candidate, those
        of other classes included, so with many candidates they go in groups of whole classes (about
        ``NMS_GROUP`` boxes each): a few more calls, far fewer useless comparisons.
        """
        shifted = boxes.to(torch.float64, copy=True)
        if len(labels):
            shifted -= shifted.min()
        span = float(shifted.max()) + 1 if len(labels) else 1.0
        shifted += labels.to(torch.float64).mul_(span)[:, None]
        scores = scores.to(torch.float64)
        if len(labels) < 2 * NMS_GROUP:
            return nms(shifted, scores, self.nms_thresh)
        order = torch.sort(labels, stable=True).indices  # by class; best first within a class
        shifted, scores = shifted[order], scores[order]
        kept, start, end = [], 0, 0
        for count in torch.bincount(labels).tolist():
            end += count
            if end - start >= NMS_GROUP or end == len(labels):
                kept.append(nms(shifted[start:end], scores[start:end], self.nms_thresh).add_(start))
                start = end
        return order[torch.cat(kept)].sort().values  # candidate order is score order

    @staticmethod
    def _class_rank(cls: torch.Tensor) -> torch.Tensor:
        """Rank of each entry among the entries of its class, in order: (M,) int64 labels -> (M,) int64."""
        order = torch.sort(cls, stable=True).indices
        sorted_cls = cls[order]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(cls), device=cls.device) - torch.searchsorted(sorted_cls, sorted_cls)
        return rank
