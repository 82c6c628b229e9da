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


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plain (aspect-ratio-changing) bilinear resize to ``size`` = (H, W), as the paper's fixed 320x320 input."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def to_model_input(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB batch -> (N, 3, H, W) float32 in [0, 1] on ``device``, the model's input.

    The uint8 batch moves to the device first (a quarter of the bytes of float32). Every path into the model
    (training, evaluation, detection) goes through here.
    """
    return images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def preprocess(images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Decoded frames of any sizes -> (N, 3, H, W) float32 model input of ``size`` = (H, W), on the CPU."""
    return to_model_input(torch.from_numpy(np.stack([resize_rgb(im, size) for im in images])))
