"""Centre-size box coding with scales (10, 10, 5, 5) (docs/paper.md, section 4).

Boxes are (..., 4) float tensors (x1, y1, x2, y2) in pixels; codes are (..., 4) (dx, dy, dw, dh):
dx = 10 * (gx - ax) / aw, dy = 10 * (gy - ay) / ah, dw = 5 * log(gw / aw), dh = 5 * log(gh / ah).
TF orders the same numbers (y, x, h, w); the order only has to agree between coder and head.
"""

from __future__ import annotations

import math

import torch

# Largest exp() argument when decoding, as torchvision: keeps boxes finite for wild predictions.
DEFAULT_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(
        self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0), clamp: float = DEFAULT_CLAMP
    ) -> None:
        self.weights = weights
        self.clamp = clamp

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Codes of ``boxes`` relative to ``anchors``; both (..., 4) xyxy, broadcastable."""
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
        gw, gh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        gx, gy = boxes[..., 0] + 0.5 * gw, boxes[..., 1] + 0.5 * gh
        return torch.stack(
            [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], -1
        )

    def decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes (..., 4) xyxy from ``codes`` (..., 4) and ``anchors`` (..., 4), broadcastable.

        Centres and sizes are handled as (x, y) pairs: half the kernel launches of a coordinate-by-coordinate
        decode, which matters for the few hundred candidates of post-processing.
        """
        wx, wy, ww, wh = self.weights
        scale_xy = wx if wx == wy else codes.new_tensor([wx, wy])
        scale_wh = ww if ww == wh else codes.new_tensor([ww, wh])
        size = anchors[..., 2:] - anchors[..., :2]
        centre = codes[..., :2] / scale_xy * size + (anchors[..., :2] + 0.5 * size)
        half = torch.exp((codes[..., 2:] / scale_wh).clamp(max=self.clamp)) * size * 0.5
        return torch.cat([centre - half, centre + half], -1)
