"""Training and evaluation transforms on albumentations, with the SSD crops written as albumentations crops.

A transform takes an (H, W, 3) uint8 RGB image, ``boxes`` (M, 4) float32 xyxy pixels and ``labels`` (M,)
int64, and returns the same at the model's input size (the image float32 with TF's resize, ``tf_legacy``).
Crowd boxes travel as boxes with negative labels.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from detector.data.crops import overlaps, sample_tf_crop, sample_tv_crop
from detector.data.image_io import resize_tf_legacy
from detector.errors import UserError

STEPS = ("photometric", "zoom_out", "ssd_crop", "iou_crop", "hflip")


class SSDRandomCrop(BaseCrop):
    """The SSD random crop, in TF's form (``style="tf"``, TF's ``ssd_random_crop``) or as torchvision's
    ``RandomIoUCrop`` (``"torchvision"``); the crop windows come from ``detector.data.crops``.

    tf: 7 options of min_object_covered (0, .1, .3, .5, .7, .9, 1); 15 % of the time the image stays whole;
    otherwise up to 100 attempts draw an aspect ratio in [0.5, 2] and then a height uniformly between those
    of 0.1 and 1 of the image area (clamped to fit), until a crop covers at least the option of some box (else
    the whole image); boxes covered less than the option are dropped.
    torchvision: options (0, .1, .3, .5, .7, .9, whole); up to 40 trials per option of width and height
    factors in [0.3, 1] (aspect in [0.5, 2]) until a crop holds a box centre and has IoU >= the option with
    such a box, the option being drawn again after 40 failures; boxes whose centres lie outside are dropped.
    """

    def __init__(self, style: str = "tf", p: float = 1.0) -> None:
        super().__init__(p=p)
        if style not in ("tf", "torchvision"):
            raise ValueError(f"unknown crop style {style!r}")
        self.style = style

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        bboxes = np.asarray(data.get("bboxes", np.zeros((0, 4))))[:, :4] * np.array([w, h, w, h])
        if self.style == "tf":
            crop, keep = sample_tf_crop(self.py_random, h, w, bboxes)
        else:
            crop, keep = sample_tv_crop(self.py_random, h, w, bboxes), -1.0  # -1: keep by centre
        if crop is None:
            return {"crop_coords": (0, 0, w, h), "keep": 0.0}
        return {"crop_coords": crop, "keep": keep}

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
                bboxes = bboxes[overlaps(pixels, crop_coords)[0] >= keep]
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


class TfLegacyResize(A.DualTransform):
    """Resize to (H, W) with TF's legacy bilinear (``detector.data.image_io.resize_tf_legacy``): float32 out,
    as the TF zoo's models were fed. Boxes are relative here, so a plain resize leaves them as they are."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__(p=1.0)
        self.height, self.width = height, width

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_tf_legacy(img, (self.height, self.width))

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width")


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


def build_transform(
    size: tuple[int, int], steps: list[str] = (), zoom_out_max: float = 4.0, resize: str = "cv2"
) -> A.Compose:
    """``steps`` in order, then a plain resize to ``size`` = (H, W): cv2's bilinear (uint8 images out) or
    ``tf_legacy`` (float32 images out, in [0, 255]). Boxes of under 1 pixel are dropped."""
    last = TfLegacyResize(*size) if resize == "tf_legacy" else A.Resize(size[0], size[1])
    ops = [_step(s, zoom_out_max) for s in steps] + [last]
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
