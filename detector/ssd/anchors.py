"""Anchor (default box) layouts of the two SSDLite heads.

Every layout is a list, one entry per feature level, of relative (width, height) pairs in units of the input
size; ``grid_anchors`` tiles them over the feature maps. Anchors are returned as (A, 4) float32 boxes
(x1, y1, x2, y2) in input pixels, ordered level by level, row-major over the map, then by pair: the same
order as the head's flattened predictions.
"""

from __future__ import annotations

import math

import torch

# TF ssd_anchor_generator of the paper's config (docs/paper.md, section 4).
MIN_SCALE, MAX_SCALE = 0.2, 0.95
PAPER_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
# Lowest layer: 3 boxes, (scale 0.1, ratio 1), (0.2, 2), (0.2, 1/2) (TF reduce_boxes_in_lowest_layer).
PAPER_LOWEST = ((0.1, 1.0), (MIN_SCALE, 2.0), (MIN_SCALE, 0.5))
TORCHVISION_RATIOS = (2.0, 3.0)


def level_scales(num_levels: int) -> list[float]:
    """s_i = 0.2 + (0.95 - 0.2) * i / (L - 1), then 1.0 so that level i can use sqrt(s_i * s_(i+1))."""
    return [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (num_levels - 1) for i in range(num_levels)] + [1.0]


def paper_pairs(num_levels: int = 6) -> list[list[tuple[float, float]]]:
    """TF layout: 3 boxes on the lowest level, 6 elsewhere ({1, 2, 1/2, 3, 1/3} + the interpolated scale)."""
    scales = level_scales(num_levels)
    levels = []
    for i in range(num_levels):
        if i == 0:
            specs = list(PAPER_LOWEST)
        else:
            specs = [(scales[i], r) for r in PAPER_RATIOS] + [(math.sqrt(scales[i] * scales[i + 1]), 1.0)]
        levels.append([(s * math.sqrt(r), s / math.sqrt(r)) for s, r in specs])
    return levels


def torchvision_pairs(num_levels: int = 6) -> list[list[tuple[float, float]]]:
    """torchvision's DefaultBoxGenerator([[2, 3]] * L, 0.2, 0.95): 6 boxes per location on every level,
    clipped to [0, 1] like torchvision does."""
    scales = level_scales(num_levels)
    levels = []
    for i in range(num_levels):
        s, s_next = scales[i], math.sqrt(scales[i] * scales[i + 1])
        pairs = [(s, s), (s_next, s_next)]
        for r in TORCHVISION_RATIOS:
            w, h = s * math.sqrt(r), s / math.sqrt(r)
            pairs += [(w, h), (h, w)]
        levels.append([(min(w, 1.0), min(h, 1.0)) for w, h in pairs])
    return levels


def layout_pairs(layout: str, num_levels: int = 6) -> list[list[tuple[float, float]]]:
    if layout == "paper":
        return paper_pairs(num_levels)
    if layout == "torchvision":
        return torchvision_pairs(num_levels)
    raise ValueError(f"unknown head layout {layout!r}; expected 'paper' or 'torchvision'")


def grid_anchors(
    feature_sizes: list[tuple[int, int]],
    pairs: list[list[tuple[float, float]]],
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Tile ``pairs`` over maps of (H, W) ``feature_sizes`` for an input of ``image_size`` = (H, W).

    Centres sit at ((j + 0.5) / W_k, (i + 0.5) / H_k) of the input. Returns (A, 4) float32 xyxy pixels.
    """
    img_h, img_w = image_size
    out = []
    for (fh, fw), level in zip(feature_sizes, pairs, strict=True):
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)  # (HW, 1, 2)
        wh = torch.tensor(level, dtype=torch.float64).reshape(1, -1, 2)  # (1, P, 2)
        centres = centres.expand(-1, wh.shape[1], -1)
        wh = wh.expand(centres.shape[0], -1, -1)
        boxes = torch.cat([centres - wh / 2, centres + wh / 2], -1).reshape(-1, 4)
        out.append(boxes * torch.tensor([img_w, img_h, img_w, img_h], dtype=torch.float64))
    return torch.cat(out).to(torch.float32)
