"""The embedded default dataset: synthetic COCO-format detection data, deterministic from a seed.

Shapes of five classes (several sizes, one to five per image, random colours) on textured backgrounds
(smooth colour noise, stripes, speckle). Category ids are deliberately not contiguous, as in real datasets.

Other domains: ``classes`` picks the shape kinds to draw among every known one
(detector.data.synthetic_shapes.KIND_IDS: the demo's five plus star, hexagon, arrow; each keeps its fixed
id) and ``background`` the style ("demo", or "tiles": gradient + tiled pattern + blobs). The defaults
(None, "demo") give the demo dataset, byte for byte as before these options existed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from detector.data.synthetic_shapes import BACKGROUNDS, DEMO_KINDS, KIND_IDS, draw
from detector.data.synthetic_shapes import background as _background

log = logging.getLogger(__name__)

CATEGORIES = [{"id": KIND_IDS[k], "name": k} for k in DEMO_KINDS]  # the demo's: circle 3 ... ring 20


def categories(classes: Sequence[str] | None = None) -> list[dict]:
    """COCO categories [{"id", "name"}] of a dataset drawing ``classes`` (names of ``KIND_IDS``; None: the
    demo's five), sorted by id. Each kind keeps its fixed id; unknown or repeated names raise ValueError."""
    if classes is None:
        return [dict(c) for c in CATEGORIES]
    names = list(classes)
    unknown = [n for n in names if n not in KIND_IDS]
    if unknown:
        raise ValueError(f"unknown shape kinds {unknown}; known: {', '.join(KIND_IDS)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct and at least one, got {names}")
    return [{"id": KIND_IDS[n], "name": n} for n in sorted(names, key=KIND_IDS.__getitem__)]


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_image(
    rng: np.random.Generator,
    h: int,
    w: int,
    max_objects: int = 5,
    classes: Sequence[str] | None = None,
    background: str = "demo",
) -> tuple[np.ndarray, list[tuple]]:
    """One image (H, W, 3) uint8 RGB and its objects [(category index, (x1, y1, x2, y2))].

    The category index points into ``categories(classes)`` (the demo's ``CATEGORIES`` by default); boxes are
    integer pixels, x2/y2 exclusive, inside the image. ``background``: a style of ``BACKGROUNDS``.
    """
    cats = categories(classes)
    img = _background(rng, h, w, background)
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
        cls = int(rng.integers(len(cats)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw(img, cats[cls]["name"], box, color)
        objects.append((cls, box))
    return img, objects


def write_split(
    out_dir: Path,
    split: str,
    count: int,
    seed: int,
    size_range: tuple[int, int],
    classes: Sequence[str] | None = None,
    background: str = "demo",
) -> Path:
    """Write ``count`` JPEGs under out_dir/split/ and out_dir/annotations/instances_<split>.json.

    The JSON: {"images": [{"id", "file_name", "width", "height"}], "annotations": [{"id", "image_id",
    "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}], "categories": categories(classes)}.
    """
    cats = categories(classes)
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background style {background!r}; known: {', '.join(BACKGROUNDS)}")
    rng = np.random.default_rng(seed)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        img, objects = render_image(rng, h, w, classes=classes, background=background)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(image_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for cls, (x1, y1, x2, y2) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cats[cls]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    ann = out_dir / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    log.debug("wrote %d images of %s (%s background) to %s", count, split, background, image_dir)
    return ann


def generate(
    out_dir: str | Path,
    num_train: int = 2000,
    num_val: int = 300,
    seed: int = 0,
    size_range: tuple[int, int] = (160, 320),
    classes: Sequence[str] | None = None,
    background: str = "demo",
) -> Path:
    """The COCO 2017 layout (annotations/instances_{train,val}2017.json, train2017/, val2017/) under out_dir.

    ``classes``: shape kinds to draw (names of ``KIND_IDS``; None: the demo's five); ``background``: a style
    of ``BACKGROUNDS``. The defaults give the demo dataset.
    """
    out_dir = Path(out_dir)
    write_split(out_dir, "train2017", num_train, seed, size_range, classes, background)
    write_split(out_dir, "val2017", num_val, seed + 1_000_000, size_range, classes, background)
    return out_dir


def write_video(
    path: str | Path, frames: int = 120, size: tuple[int, int] = (240, 320), fps: float = 15.0, seed: int = 0
) -> Path:
    """An .mp4 of shapes drifting over a fixed textured background (for the detection demo)."""
    rng = np.random.default_rng(seed)
    h, w = size
    still = _background(rng, h, w)
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
            img = still.copy()
            for sh in shapes:
                sh["pos"] += sh["vel"]
                for axis, limit in ((0, w), (1, h)):
                    if not 0 <= sh["pos"][axis] <= limit - sh["s"]:
                        sh["vel"][axis] *= -1
                        sh["pos"][axis] = np.clip(sh["pos"][axis], 0, limit - sh["s"])
                x, y = (int(v) for v in sh["pos"])
                draw(img, CATEGORIES[sh["cls"]]["name"], (x, y, x + sh["s"], y + sh["s"]), sh["color"])
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return Path(path)


def synthetic_frames(count: int, height: int = 480, width: int = 640, seed: int = 0) -> list[np.ndarray]:
    """Smooth random (H, W, 3) uint8 RGB frames (decoded-image stand-ins; no data set needed)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        low = (rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8)
        frame = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
        frames.append(np.clip(frame.astype(np.int16) + rng.integers(-12, 13, frame.shape), 0, 255).astype(np.uint8))
    return frames
