"""Training and evaluation transforms on albumentations, with the SSD crops written as albumentations crops.

A transform takes an (H, W, 3) uint8 RGB image, ``boxes`` (M, 4) float32 xyxy pixels and ``labels`` (M,)
int64, and returns the same at the model's input size. Crowd boxes travel as boxes with negative labels.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from detector.errors import UserError

# TF ssd_random_crop (docs/paper.md, section 4): min_object_covered / overlap thresholds per option.
TF_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
# torchvision RandomIoUCrop: min IoU per option; 2.0 means "leave the image whole".
TV_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 2.0)
STEPS = ("photometric", "zoom_out", "ssd_crop", "iou_crop", "hflip")


def _overlaps(boxes: np.ndarray, crop: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Intersection / box area and IoU of (M, 4) xyxy boxes with one xyxy crop."""
    ix = np.clip(np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    crop_area = (crop[2] - crop[0]) * (crop[3] - crop[1])
    return inter / np.maximum(area, 1e-12), inter / np.maximum(area + crop_area - inter, 1e-12)


class SSDRandomCrop(BaseCrop):
    """The SSD random crop, in TF's form (``style="tf"``) or torchvision's RandomIoUCrop (``"torchvision"``).

    tf: with probability ``keep_prob`` the image stays whole; otherwise one threshold t is drawn from
    (0, .1, .3, .5, .7, .9, 1) and up to ``max_tries`` crops of area fraction in [0.1, 1] and aspect ratio in
    [0.5, 2] are drawn until one covers at least t of some box; boxes covered less than t are dropped.
    torchvision: t from (0, .1, .3, .5, .7, .9, whole); width and height scales in [0.3, 1], aspect in [0.5, 2];
    a crop is kept when a box whose centre lies inside has IoU >= t with it; boxes whose centres lie outside
    are dropped. When no crop is found the image stays whole.
    """

    def __init__(self, style: str = "tf", keep_prob: float = 0.15, max_tries: int = 100, p: float = 1.0) -> None:
        super().__init__(p=p)
        if style not in ("tf", "torchvision"):
            raise ValueError(f"unknown crop style {style!r}")
        self.style, self.keep_prob, self.max_tries = style, keep_prob, max_tries

    def _sample_size(self, h: int, w: int) -> tuple[int, int]:
        rng = self.py_random
        if self.style == "tf":
            area, ratio = rng.uniform(0.1, 1.0) * h * w, rng.uniform(0.5, 2.0)
            return round(math.sqrt(area / ratio)), round(math.sqrt(area * ratio))
        return round(h * rng.uniform(0.3, 1.0)), round(w * rng.uniform(0.3, 1.0))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        whole = {"crop_coords": (0, 0, w, h), "keep": 0.0}
        bboxes = np.asarray(data.get("bboxes", np.zeros((0, 4))))[:, :4] * np.array([w, h, w, h])
        rng = self.py_random
        if self.style == "tf" and rng.random() < self.keep_prob:
            return whole
        threshold = rng.choice(TF_THRESHOLDS if self.style == "tf" else TV_THRESHOLDS)
        if threshold > 1.0:
            return whole
        for _ in range(self.max_tries):
            ch, cw = self._sample_size(h, w)
            if not (1 <= ch <= h and 1 <= cw <= w) or not 0.5 <= cw / ch <= 2.0:
                continue
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = (x0, y0, x0 + cw, y0 + ch)
            if len(bboxes) == 0:
                return {"crop_coords": crop, "keep": 0.0}
            coverage, iou = _overlaps(bboxes, crop)
            if self.style == "tf":
                if coverage.max() >= threshold:
                    return {"crop_coords": crop, "keep": threshold}
                continue
            cx, cy = (bboxes[:, 0] + bboxes[:, 2]) / 2, (bboxes[:, 1] + bboxes[:, 3]) / 2
            inside = (cx > crop[0]) & (cx < crop[2]) & (cy > crop[1]) & (cy < crop[3])
            if inside.any() and iou[inside].max() >= threshold:
                return {"crop_coords": crop, "keep": -1.0}  # -1: keep by centre
        return whole

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], keep: float = 0.0, **params: Any
    ) -> np.ndarray:
        if len(bboxes):
            h, w = params["shape"][:2]
            pixels = bboxes[:, :4] * np.array([w, h, w, h])
            if keep < 0:
                cx, cy = (pixels[:, 0] + pixels[:, 2]) / 2, (pixels[:, 1] + pixels[:, 3]) / 2
                x0, y0, x1, y1 = crop_coords
                bboxes = bboxes[(cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)]
            elif keep > 0:
                bboxes = bboxes[_overlaps(pixels, crop_coords)[0] >= keep]
        return super().apply_to_bboxes(bboxes, crop_coords, **params)


class RandomZoomOut(A.DualTransform):
    """Place the image at a random spot of a canvas up to ``max_scale`` times larger, filled with the mean
    colour (SSD's "expand"), so that objects become small."""

    def __init__(self, max_scale: float = 4.0, fill: tuple[int, int, int] = (124, 116, 104), p: float = 0.5):
        super().__init__(p=p)
        self.max_scale, self.fill = max_scale, fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        s = self.py_random.uniform(1.0, self.max_scale)
        ch, cw = int(h * s), int(w * s)
        return {"offset": (self.py_random.randint(0, cw - w), self.py_random.randint(0, ch - h)), "canvas": (ch, cw)}

    def apply(self, img: np.ndarray, offset: tuple[int, int], canvas: tuple[int, int], **params: Any) -> np.ndarray:
        out = np.empty((*canvas, img.shape[2]), dtype=img.dtype)
        out[:] = np.array(self.fill, dtype=img.dtype)[: img.shape[2]]
        out[offset[1] : offset[1] + img.shape[0], offset[0] : offset[0] + img.shape[1]] = img
        return out

    def apply_to_bboxes(
        self, bboxes: np.ndarray, offset: tuple[int, int], canvas: tuple[int, int], **params: Any
    ) -> np.ndarray:
        h, w = params["shape"][:2]
        out = bboxes.copy()
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * w + offset[0]) / canvas[1]
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * h + offset[1]) / canvas[0]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_scale", "fill")


def _step(name: str, zoom_out_max: float) -> A.BasicTransform:
    if name == "photometric":  # SSD's photometric distortion, as torchvision's RandomPhotometricDistort
        return A.ColorJitter(
            brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.05, 0.05), p=0.5
        )
    if name == "zoom_out":
        return RandomZoomOut(zoom_out_max)
    if name == "ssd_crop":
        return SSDRandomCrop("tf")
    if name == "iou_crop":
        return SSDRandomCrop("torchvision")
    if name == "hflip":
        return A.HorizontalFlip(p=0.5)
    raise UserError(f"data.augment: unknown step {name!r}; expected one of {', '.join(STEPS)}")


def build_transform(size: tuple[int, int], steps: list[str] = (), zoom_out_max: float = 4.0) -> A.Compose:
    """``steps`` in order, then a plain resize to ``size`` = (H, W). Boxes of under 1 pixel are dropped."""
    ops = [_step(s, zoom_out_max) for s in steps] + [A.Resize(size[0], size[1])]
    return A.Compose(
        ops,
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=1.0, clip=True),
        seed=0,
    )


def apply_transform(
    transform: A.Compose, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``transform``; ``seed`` makes the draw depend on the sample alone (not on worker or order)."""
    if seed is not None:
        transform.set_random_seed(seed)
    out = transform(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
    return (
        out["image"],
        np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
        np.asarray(out["labels"], dtype=np.int64).reshape(-1),
    )
