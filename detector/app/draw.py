"""Drawing detections with OpenCV, and the live display window.

Images here are (H, W, 3) uint8 **BGR** arrays (OpenCV's order), drawn on in place. Boxes are (D, 4) xyxy in
the image's pixels.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

# 20 well-separated BGR colours; class k uses PALETTE[k % 20].
PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146),
    (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100),
    (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
]  # fmt: skip
WINDOW = "detect"


def _scale(image: np.ndarray) -> tuple[int, float]:
    """Line thickness and font scale that stay legible from 32 px to 4K frames."""
    side = min(image.shape[:2])
    return max(1, round(side / 400)), max(0.35, side / 1200)


def draw_detections(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: list[str]
) -> np.ndarray:
    """Boxes with ``name score`` labels onto ``image`` (BGR, in place); ``labels`` pick the colour."""
    thickness, font_scale = _scale(image)
    h, w = image.shape[:2]
    for (x1, y1, x2, y2), score, label, name in zip(boxes.tolist(), scores.tolist(), labels.tolist(), names):
        colour = PALETTE[int(label) % len(PALETTE)]
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(image, p1, p2, colour, thickness, cv2.LINE_AA)
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thickness - 1))
        # label above the box, or inside it when the box touches the top edge
        ty = p1[1] - base if p1[1] - th - base >= 0 else min(h - 1, p1[1] + th + base)
        tx = min(max(0, p1[0]), max(0, w - tw))
        cv2.rectangle(image, (tx, ty - th - base), (tx + tw, ty + base), colour, -1)
        cv2.putText(image, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, thickness - 1), cv2.LINE_AA)  # fmt: skip
    return image


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """An ``FPS nn.n`` overlay in the top-left corner (BGR, in place)."""
    thickness, font_scale = _scale(image)
    text = f"FPS {fps:.1f}"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 255, 0), thickness, cv2.LINE_AA)
    return image


def display_problem() -> str | None:
    """Why a window cannot be shown here (one line), or None when it can."""
    build = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in build.splitlines() if line.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        return (
            "--show: this OpenCV build has no GUI (opencv-python-headless, which albumentations installs); on a "
            "desktop, `python scripts/setup_opencv.py` switches to opencv-python - or drop --show and use --output-dir"
        )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "--show: no display (DISPLAY and WAYLAND_DISPLAY are unset); drop --show and use --output-dir"
    return None


def show(image: np.ndarray) -> bool:
    """Show ``image`` (BGR) in the window; False when the user pressed q or Esc or closed the window."""
    cv2.imshow(WINDOW, image)
    key = cv2.waitKey(1) & 0xFF
    if key in (ord("q"), 27):
        return False
    return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1


def close_window() -> None:
    cv2.destroyAllWindows()
