"""The embedded default dataset: synthetic COCO-format detection data, deterministic from a seed.

Shapes of five classes (several sizes, one to five per image, random colours) on textured backgrounds
(smooth colour noise, stripes, speckle). Category ids are deliberately not contiguous, as in real datasets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = [
    {"id": 3, "name": "circle"},
    {"id": 7, "name": "square"},
    {"id": 11, "name": "triangle"},
    {"id": 12, "name": "cross"},
    {"id": 20, "name": "ring"},
]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    gh, gw = rng.integers(2, 7, size=2)
    coarse = rng.integers(0, 256, size=(gh, gw, 3)).astype(np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    for _ in range(rng.integers(0, 6)):  # stripes and lines
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
        cv2.line(img, p1, p2, tuple(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(1, 4)))
    img += rng.normal(0, rng.uniform(2, 14), size=img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(img: np.ndarray, kind: str, box: tuple[int, int, int, int], color: tuple[int, ...]) -> None:
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


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_image(rng: np.random.Generator, h: int, w: int, max_objects: int = 5) -> tuple[np.ndarray, list[tuple]]:
    """One image (H, W, 3) uint8 RGB and its objects [(category index, (x1, y1, x2, y2))]."""
    img = _background(rng, h, w)
    objects: list[tuple[int, tuple[int, int, int, int]]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            size = rng.uniform(0.12, 0.5) * min(h, w)
            aspect = rng.uniform(0.7, 1.4)
            bw, bh = int(size * math.sqrt(aspect)), int(size / math.sqrt(aspect))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            box = (x1, y1, x1 + bw, y1 + bh)
            if all(_iou(box, o[1]) < 0.1 for o in objects):
                break
        else:
            continue
        cls = int(rng.integers(len(CATEGORIES)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        _draw(img, CATEGORIES[cls]["name"], box, color)
        objects.append((cls, box))
    return img, objects


def write_split(out_dir: Path, split: str, count: int, seed: int, size_range: tuple[int, int]) -> Path:
    """Write ``count`` JPEGs under out_dir/split/ and out_dir/annotations/instances_<split>.json."""
    rng = np.random.default_rng(seed)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        img, objects = render_image(rng, h, w)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(image_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for cls, (x1, y1, x2, y2) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": CATEGORIES[cls]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    ann = out_dir / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann


def generate(
    out_dir: str | Path,
    num_train: int = 2000,
    num_val: int = 300,
    seed: int = 0,
    size_range: tuple[int, int] = (160, 320),
) -> Path:
    """The COCO 2017 layout (annotations/instances_{train,val}2017.json, train2017/, val2017/) under out_dir."""
    out_dir = Path(out_dir)
    write_split(out_dir, "train2017", num_train, seed, size_range)
    write_split(out_dir, "val2017", num_val, seed + 1_000_000, size_range)
    return out_dir


def write_video(
    path: str | Path, frames: int = 120, size: tuple[int, int] = (240, 320), fps: float = 15.0, seed: int = 0
) -> Path:
    """An .mp4 of shapes drifting over a fixed textured background (for the detection demo)."""
    rng = np.random.default_rng(seed)
    h, w = size
    background = _background(rng, h, w)
    shapes = []
    for _ in range(3):
        s = int(rng.uniform(0.15, 0.35) * min(h, w))
        shapes.append(
            {
                "cls": int(rng.integers(len(CATEGORIES))),
                "s": s,
                "pos": rng.uniform([0, 0], [w - s, h - s]),
                "vel": rng.uniform(-3, 3, 2),
                "color": tuple(int(c) for c in rng.integers(0, 256, 3)),
            }
        )
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for _ in range(frames):
            img = background.copy()
            for sh in shapes:
                sh["pos"] += sh["vel"]
                for axis, limit in ((0, w), (1, h)):
                    if not 0 <= sh["pos"][axis] <= limit - sh["s"]:
                        sh["vel"][axis] *= -1
                        sh["pos"][axis] = np.clip(sh["pos"][axis], 0, limit - sh["s"])
                x, y = (int(v) for v in sh["pos"])
                _draw(img, CATEGORIES[sh["cls"]]["name"], (x, y, x + sh["s"], y + sh["s"]), sh["color"])
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return Path(path)
