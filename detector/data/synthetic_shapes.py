"""Drawing for the synthetic datasets (detector.data.synthetic): shape kinds and background styles.

Shape kinds and their fixed COCO category ids (``KIND_IDS``): the demo's five (circle 3, square 7,
triangle 11, cross 12, ring 20) and the kinds of the second domain (star 16, hexagon 23, arrow 27), ids
non-contiguous as in real datasets. A kind keeps its id in every dataset that draws it.

Background styles (``BACKGROUNDS``):

- ``demo``: smooth colour noise (a coarse random grid upsampled), a few lines, pixel noise; the demo's.
- ``tiles``: a linear colour gradient under a tiled pattern (checkerboard, stripes or bricks, random cell
  size and contrast), a few soft blurred blobs and light pixel noise: straight periodic edges everywhere,
  visibly a different domain.

Images are (H, W, 3) uint8 RGB arrays; boxes are (x1, y1, x2, y2) integer pixels, x2/y2 exclusive.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

KIND_IDS: dict[str, int] = {
    "circle": 3,
    "square": 7,
    "triangle": 11,
    "cross": 12,
    "star": 16,
    "ring": 20,
    "hexagon": 23,
    "arrow": 27,
}
DEMO_KINDS = ("circle", "square", "triangle", "cross", "ring")
BACKGROUNDS = ("demo", "tiles")


def background(rng: np.random.Generator, h: int, w: int, style: str = "demo") -> np.ndarray:
    """A (h, w, 3) uint8 RGB background of ``style`` (one of ``BACKGROUNDS``)."""
    if style == "demo":
        return _demo_background(rng, h, w)
    if style == "tiles":
        return _tiles_background(rng, h, w)
    raise ValueError(f"unknown background style {style!r}; known: {', '.join(BACKGROUNDS)}")


def _demo_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    gh, gw = rng.integers(2, 7, size=2)
    coarse = rng.integers(0, 256, size=(gh, gw, 3)).astype(np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    for _ in range(rng.integers(0, 6)):  # stripes and lines
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
        cv2.line(img, p1, p2, tuple(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(1, 4)))
    img += rng.normal(0, rng.uniform(2, 14), size=img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tiles_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Linear gradient between two colours along a random direction.
    c0, c1 = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0 + (c1 - c0) * t[..., None]
    # Tiled pattern: checkerboard, stripes or bricks, modulating the gradient's brightness.
    cell = int(rng.integers(6, 33))
    contrast = rng.uniform(25, 70)
    pattern = int(rng.integers(3))
    ix, iy = (xx // cell).astype(np.int32), (yy // cell).astype(np.int32)
    if pattern == 0:  # checkerboard
        on = (ix + iy) % 2
    elif pattern == 1:  # stripes, vertical or horizontal
        on = (ix if rng.random() < 0.5 else iy) % 2
    else:  # bricks: rows offset by half a cell, dark mortar lines
        ox = ((xx + (iy % 2) * cell / 2) % cell).astype(np.int32)
        oy = (yy % cell).astype(np.int32)
        on = ((ox > 1) & (oy > 1)).astype(np.int32)
    img += (on[..., None] - 0.5) * contrast * np.array(rng.uniform(0.6, 1.0, 3), np.float32)
    # A few soft blobs.
    blobs = np.zeros((h, w, 3), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        radius = int(rng.uniform(0.1, 0.3) * min(h, w))
        cv2.circle(blobs, center, max(radius, 2), tuple(float(c) for c in rng.uniform(-60, 60, 3)), -1)
    img += cv2.GaussianBlur(blobs, (0, 0), sigmaX=max(min(h, w) / 12, 1.0))
    img += rng.normal(0, rng.uniform(1, 5), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _fit(points: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Polygon ``points`` (N, 2) in any units, scaled and shifted to touch every side of ``box``."""
    x1, y1, x2, y2 = box
    lo, hi = points.min(0), points.max(0)
    unit = (points - lo) / np.maximum(hi - lo, 1e-6)
    out = unit * np.array([x2 - 1 - x1, y2 - 1 - y1]) + np.array([x1, y1])
    return np.round(out).astype(np.int32)


def _star_points() -> np.ndarray:
    a = np.arange(10) * math.pi / 5 - math.pi / 2
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _hexagon_points() -> np.ndarray:
    a = np.arange(6) * math.pi / 3
    return np.stack([np.cos(a), np.sin(a)], 1)


def _arrow_points() -> np.ndarray:
    """A right-pointing arrow: shaft (60% of the length, a third of the height) and a triangular head."""
    return np.array([[0, 1], [0.6, 1], [0.6, 0], [1, 1.5], [0.6, 3], [0.6, 2], [0, 2]], np.float64)


_POLYGONS = {"star": _star_points(), "hexagon": _hexagon_points(), "arrow": _arrow_points()}


def draw(img: np.ndarray, kind: str, box: tuple[int, int, int, int], color: tuple[int, ...]) -> None:
    """Draw a filled shape of ``kind`` (a key of ``KIND_IDS``) in ``box`` onto ``img``, in place."""
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) // 2, (y1 + y2) // 2, (x2 - x1) // 2, (y2 - y1) // 2
    if kind == "circle":
        cv2.ellipse(img, (cx, cy), (rx, ry), 0, 0, 360, color, -1, cv2.LINE_AA)
    elif kind == "square":
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, -1)
    elif kind == "triangle":
        pts = np.array([[cx, y1], [x1, y2 - 1], [x2 - 1, y2 - 1]], np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    elif kind == "cross":
        t = max(2, min(rx, ry) // 2)
        cv2.rectangle(img, (cx - t, y1), (cx + t, y2 - 1), color, -1)
        cv2.rectangle(img, (x1, cy - t), (x2 - 1, cy + t), color, -1)
    elif kind == "ring":
        t = max(2, min(rx, ry) // 3)
        cv2.ellipse(img, (cx, cy), (max(1, rx - t // 2), max(1, ry - t // 2)), 0, 0, 360, color, t, cv2.LINE_AA)
    elif kind in _POLYGONS:
        cv2.fillPoly(img, [_fit(_POLYGONS[kind], box)], color, cv2.LINE_AA)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; known: {', '.join(KIND_IDS)}")
