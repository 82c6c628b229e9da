"""Centre-size box coding with scales (10, 10, 5, 5) (reference file, section 4).

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
        """Boxes (..., 4) xyxy from ``codes`` (..., 4) and ``anchors`` (..., 4), broadcastable."""
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
        cx = codes[..., 0] / wx * aw + ax
        cy = codes[..., 1] / wy * ah + ay
        w = torch.exp((codes[..., 2] / ww).clamp(max=self.clamp)) * aw
        h = torch.exp((codes[..., 3] / wh).clamp(max=self.clamp)) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
