"""Crop-window samplers of the SSD random crop, each a port of its reference implementation.

``sample_tf_crop`` follows TF's ``ssd_random_crop`` (models/research/object_detection/core/preprocessor.py:
``ssd_random_crop`` -> ``random_crop_image`` -> ``_strict_random_crop_image``), whose window comes from
``tf.image.sample_distorted_bounding_box`` (tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc:
``GenerateRandomCrop`` and ``SatisfiesOverlapConstraints``).
``sample_tv_crop`` follows torchvision's ``RandomIoUCrop`` (torchvision/transforms/v2/_geometry.py and the older
references/detection/transforms.py, same loop).

Both take a ``random.Random`` (the transform's ``py_random``), so every draw depends on the seed alone, and
boxes as (M, 4) float xyxy pixels; both return an integer xyxy crop window, or ``None`` for "the whole image".
"""

from __future__ import annotations

import math
import random

import numpy as np

Crop = tuple[int, int, int, int]

# TF ssd_random_crop defaults (one entry per option in TF; the same for all 7 options there).
TF_MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # also the overlap_thresh used to prune boxes
TF_ASPECT_RANGE = (0.5, 2.0)  # crop width / height, in pixels
TF_AREA_RANGE = (0.1, 1.0)  # crop area / image area
TF_RANDOM_COEF = 0.15  # random_crop_image: crop only when uniform() > random_coef, once per call
TF_MAX_ATTEMPTS = 100  # _strict_random_crop_image passes max_attempts=100; after that, the whole image
# torchvision RandomIoUCrop defaults.
TV_OPTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # min IoU per option; >= 1.0 means "leave the image as is"
TV_SCALE = (0.3, 1.0)  # min_scale, max_scale: width and height factors, drawn independently
TV_ASPECT = (0.5, 2.0)  # min_aspect_ratio, max_aspect_ratio on the pixel new_w / new_h
TV_TRIALS = 40  # trials per drawn option, then the option is drawn again
# Ours: torchvision loops until it crops or draws the 1.0 option; (6/7) ** 1000 ~ 1e-67, so this cap only
# guarantees termination and never shows in the statistics.
TV_MAX_ROUNDS = 1000


def overlaps(boxes: np.ndarray, crop: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Intersection / box area and IoU of (M, 4) xyxy boxes with one xyxy crop."""
    ix = np.clip(np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    crop_area = (crop[2] - crop[0]) * (crop[3] - crop[1])
    return inter / np.maximum(area, 1e-12), inter / np.maximum(area + crop_area - inter, 1e-12)


def _tf_generate_crop(rng: random.Random, h: int, w: int, ratio: float) -> Crop | None:
    """TF's ``GenerateRandomCrop``: for a drawn aspect ratio (width / height), the height is uniform over the
    integers between the heights that give the minimum and maximum area, the maximum clamped so that the crop
    fits the image; the offset is then uniform. ``None`` when rounding leaves the constraints unmet."""
    min_area, max_area = TF_AREA_RANGE[0] * w * h, TF_AREA_RANGE[1] * w * h
    height = round(math.sqrt(min_area / ratio))  # lrintf: round half to even, as Python's round
    max_height = round(math.sqrt(max_area / ratio))
    if round(max_height * ratio) > w:  # the largest height whose rounded width still fits
        max_height = int((w + 0.5 - 1e-7) / ratio)  # TF's kEps = 1e-7
        if round(max_height * ratio) > w:
            max_height -= 1
    max_height = min(max_height, h)
    height = min(height, max_height)
    if height < max_height:
        height += rng.randrange(max_height - height + 1)  # closed range [height, max_height]
    width = round(height * ratio)
    area = width * height
    if area < min_area:  # TF's rounding repairs: one pixel taller, then one pixel shorter
        height += 1
        width = round(height * ratio)
        area = width * height
    if area > max_area:
        height -= 1
        width = round(height * ratio)
        area = width * height
    if area < min_area or area > max_area or width > w or height > h or width <= 0 or height <= 0:
        return None
    # SimplePhilox::Uniform(n) is in [0, n): TF never places a smaller crop against the bottom or right edge.
    y = rng.randrange(h - height) if height < h else 0
    x = rng.randrange(w - width) if width < w else 0
    return x, y, x + width, y + height


def _tf_covers(crop: Crop, boxes: np.ndarray, min_object_covered: float) -> bool:
    """TF's ``SatisfiesOverlapConstraints`` on integer boxes: the crop (of at least one pixel) covers at least
    ``min_object_covered`` of one box of at least one pixel."""
    if (crop[2] - crop[0]) * (crop[3] - crop[1]) < 1:
        return False
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ix = np.clip(np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1]), 0, None)
    valid = area >= 1
    return bool((ix[valid] * iy[valid] >= min_object_covered * area[valid]).any())


def sample_tf_crop(rng: random.Random, h: int, w: int, boxes: np.ndarray) -> tuple[Crop | None, float]:
    """One draw of TF's ``ssd_random_crop``: the crop window (``None`` = whole image) and the overlap threshold
    with which to prune the boxes (keep a box when the crop covers at least that fraction of it).

    An option is drawn uniformly from the 7; with probability ``TF_RANDOM_COEF`` the image stays whole;
    otherwise up to ``TF_MAX_ATTEMPTS`` attempts each draw an aspect ratio uniformly in ``TF_ASPECT_RANGE`` and
    a crop for it (``_tf_generate_crop``), and the first that covers enough of some box is taken. When none
    does, the whole image is the window.
    """
    threshold = TF_MIN_OBJECT_COVERED[rng.randrange(len(TF_MIN_OBJECT_COVERED))]
    if not rng.random() > TF_RANDOM_COEF:  # tf.greater(uniform, random_coef) decides to crop
        return None, 0.0
    # The kernel truncates the [0, 1]-clipped boxes to integer pixels, and uses the whole image without boxes.
    limits = np.array([w, h, w, h], dtype=np.float64)
    pixels = np.floor(np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, limits)).astype(np.int64)
    if len(pixels) == 0:
        pixels = np.array([[0, 0, w, h]], dtype=np.int64)
    lo, hi = TF_ASPECT_RANGE
    for _ in range(TF_MAX_ATTEMPTS):
        ratio = rng.random() * (hi - lo) + lo
        crop = _tf_generate_crop(rng, h, w, ratio)
        if crop is not None and _tf_covers(crop, pixels, threshold):
            return crop, threshold
    return None, 0.0  # the whole image covers every (in-image) box fully: nothing to prune


def sample_tv_crop(rng: random.Random, h: int, w: int, boxes: np.ndarray) -> Crop | None:
    """One draw of torchvision's ``RandomIoUCrop``: the crop window, or ``None`` for the whole image; the boxes
    to keep are those whose centre lies strictly inside the window.

    Each round draws an option from ``TV_OPTIONS``; the 1.0 option leaves the image whole; otherwise up to
    ``TV_TRIALS`` trials draw width and height factors in ``TV_SCALE`` (pixel aspect in ``TV_ASPECT``) and an
    offset, and take the first crop that holds a box centre and has IoU >= the option with such a box. When
    the trials fail, the next round draws the option again.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:  # no trial can succeed: torchvision loops until it draws "leave as is"
        return None
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    lo, hi = TV_SCALE
    for _ in range(TV_MAX_ROUNDS):
        min_iou = TV_OPTIONS[rng.randrange(len(TV_OPTIONS))]
        if min_iou >= 1.0:
            return None
        for _ in range(TV_TRIALS):
            new_w = int(w * (lo + (hi - lo) * rng.random()))
            new_h = int(h * (lo + (hi - lo) * rng.random()))
            # torchvision divides by new_h (ZeroDivisionError on images under 4 pixels high); a failed trial here.
            if new_h == 0 or not TV_ASPECT[0] <= new_w / new_h <= TV_ASPECT[1]:
                continue
            left = int((w - new_w) * rng.random())
            top = int((h - new_h) * rng.random())
            right, bottom = left + new_w, top + new_h
            if left == right or top == bottom:
                continue
            inside = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
            if not inside.any():
                continue
            if overlaps(boxes[inside], (left, top, right, bottom))[1].max() < min_iou:
                continue
            return left, top, right, bottom
    return None
