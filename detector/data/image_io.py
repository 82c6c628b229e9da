"""Image decoding and the model's pre-processing.

Images are handled as (H, W, 3) uint8 RGB numpy arrays. OpenCV decodes them: grayscale, palette and RGBA
images become RGB, 16-bit images are scaled to 8 bits. The pixels are taken as stored: COCO's boxes, widths and
heights refer to them, and TF and torchvision ignore EXIF orientation too. ``exif=True`` applies the EXIF
orientation instead (datasets labelled on the rotated views, or photos to be shown upright).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from detector.errors import UserError

# File name extensions read as still images (folders, globs, calibration sets); anything else is a video.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm"}


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, by extension), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def decode_image(data: bytes, name: str = "<bytes>", exif: bool = False) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB, as stored (or turned by its EXIF orientation with ``exif``).
    Raises UserError naming ``name`` when undecodable."""
    buf = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_COLOR if exif else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None or img.size == 0:
        raise UserError(f"{name}: not a decodable image ({len(data)} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, exif: bool = False) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (see ``decode_image``); a missing or unreadable file is a
    UserError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read image: {exc.strerror}") from None
    return decode_image(data, str(path), exif)


RESIZES = ("cv2", "tf_legacy")


def resize_rgb(image: np.ndarray, size: tuple[int, int], method: str = "cv2") -> np.ndarray:
    """Plain (aspect-ratio-changing) bilinear resize of (H0, W0, C) to ``size`` = (H, W), as the paper's fixed
    320x320 input. ``cv2``: OpenCV's bilinear with half-pixel centres, uint8 in, uint8 out (rounded).
    ``tf_legacy``: TF's legacy bilinear (``resize_tf_legacy``), float32 out, what the TF zoo's models saw."""
    if method == "tf_legacy":
        return resize_tf_legacy(image, size)
    if method != "cv2":
        raise ValueError(f"unknown resize {method!r}; expected one of {RESIZES}")
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def _legacy_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's ``compute_interpolation_weights`` with the legacy scaler: source = destination * (in / out) in
    float32, lower = floor, upper = min(ceil, in - 1), weight = source - floor."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(src)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(np.intp)
    return lower.astype(np.intp), upper, (src - lower).astype(np.float32)


def resize_tf_legacy(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H0, W0, C) uint8 or float -> (H, W, C) float32, TF's ``resize_bilinear`` with ``align_corners=False``
    and ``half_pixel_centers=False`` (``tf.image.resize_images`` of TF 1, the zoo models' preprocessor).

    Unlike cv2's, the source of output pixel i is i * in / out (no half-pixel shift: content moves by up to half
    an input pixel, and an exact 2x reduction takes every other pixel instead of averaging pairs) and the result
    stays float (no rounding to uint8). Interpolated along x, then y, in float32, in TF's order of operations.
    """
    h, w = size
    y0, y1, wy = _legacy_taps(image.shape[0], h)
    x0, x1, wx = _legacy_taps(image.shape[1], w)
    rows0, rows1 = image[y0].astype(np.float32), image[y1].astype(np.float32)
    wx = wx[None, :, None]
    top = rows0[:, x0] + (rows0[:, x1] - rows0[:, x0]) * wx
    bottom = rows1[:, x0] + (rows1[:, x1] - rows1[:, x0]) * wx
    return top + (bottom - top) * wy[:, None, None]


def to_model_input(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, H, W, 3) RGB batch, uint8 (or float32 in [0, 255] from ``resize_tf_legacy``) -> (N, 3, H, W)
    float32 in [0, 1] on ``device``, the model's input.

    The batch moves to the device first (uint8: a quarter of the bytes of float32). Every path into the model
    (training, evaluation, detection) goes through here.
    """
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return x.to(torch.float32, copy=True).div_(255.0)  # a new tensor: a float batch is not scaled in place


def resize_batch(images: list[np.ndarray], size: tuple[int, int], resize: str = "cv2") -> torch.Tensor:
    """Decoded frames of any sizes -> one (N, H, W, 3) batch at ``size`` = (H, W) by the ``resize`` method of
    ``resize_rgb`` (uint8 for cv2, float32 for tf_legacy): ``to_model_input``'s input."""
    return torch.from_numpy(np.stack([resize_rgb(im, size, resize) for im in images]))


def preprocess(images: list[np.ndarray], size: tuple[int, int], resize: str = "cv2") -> torch.Tensor:
    """Decoded frames of any sizes -> (N, 3, H, W) float32 model input of ``size`` = (H, W), on the CPU, by
    the ``resize`` method of ``resize_rgb``."""
    return to_model_input(resize_batch(images, size, resize))
