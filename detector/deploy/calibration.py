"""Calibration images for int8 exports: a folder's images, read and pre-processed as the model takes them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detector.data.image_io import image_files, preprocess, read_image
from detector.errors import UserError

log = logging.getLogger(__name__)


def calibration_files(folder: str | Path, limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``folder``, spread evenly over its sorted listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--calib {folder}: not a folder")
    files = image_files(folder)
    if not files:
        raise UserError(f"--calib {folder}: no image files in it")
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


def calibration_batches(files: list[Path], input_size: tuple[int, int], resize: str = "cv2") -> list[np.ndarray]:
    """Every readable image of ``files`` as a (1, 3, H, W) float32 model input of ``input_size`` (by the model's
    ``resize``); unreadable ones are skipped with a warning, and none readable is a UserError."""
    batches = []
    for path in tqdm(files, desc="calibration images", unit="img", leave=False):
        try:
            image = read_image(path)
        except UserError as exc:
            log.warning("calibration: skipped %s", exc)
            continue
        batches.append(preprocess([image], input_size, resize).numpy())
    if not batches:
        raise UserError("calibration: none of the --calib images could be read")
    return batches
