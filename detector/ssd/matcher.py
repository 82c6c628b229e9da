"""Anchor-to-ground-truth matching of SSD (docs/paper.md, section 4).

An anchor is positive when its best IoU with a ground-truth box is >= the threshold; then every ground-truth
box is forced onto its best anchor, so that no object goes unmatched. Crowd boxes never make positives: an
anchor that would be negative but overlaps a crowd box at the threshold is ignored instead.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

NEGATIVE = -1
IGNORE = -2


class Matcher:
    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold

    def __call__(
        self, gt_boxes: torch.Tensor, anchors: torch.Tensor, crowd_boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """gt_boxes (M, 4) and anchors (A, 4) xyxy pixels -> (A,) int64: gt index, NEGATIVE or IGNORE."""
        matches = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.int64, device=anchors.device)
        if gt_boxes.numel():
            iou = box_iou(gt_boxes, anchors)  # (M, A)
            best_iou, best_gt = iou.max(dim=0)
            matches = torch.where(best_iou >= self.iou_threshold, best_gt, matches)
            # Force every gt onto its best anchor; a later gt wins a shared anchor.
            forced = iou.argmax(dim=1)
            matches[forced] = torch.arange(gt_boxes.shape[0], device=anchors.device)
        if crowd_boxes is not None and crowd_boxes.numel():
            crowd_iou = box_iou(crowd_boxes, anchors).max(dim=0).values
            matches[(matches == NEGATIVE) & (crowd_iou >= self.iou_threshold)] = IGNORE
        return matches
