"""Checks of an exported model against PyTorch on the same inputs, and of int8 against fp32.

Inputs are (N, 3, H, W) float32 batches in [0, 1]. Differences are maxima of absolute differences: boxes in
input pixels, scores in score units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from detector.data.image_io import preprocess
from detector.data.synthetic import synthetic_frames
from detector.ssd.postprocess import PostProcessor

# An export matches PyTorch when no box coordinate differs by more than BOX_ATOL pixels and no score by
# more than SCORE_ATOL (float32 rounding through ~60 layers stays far below both).
BOX_ATOL, SCORE_ATOL = 1e-2, 1e-4


@dataclass
class Parity:
    """Largest differences found; ``detections``, ``reference_detections`` and ``matched`` (those with a
    same-class reference box within BOX_ATOL) count NMS outputs (all 0 for raw graphs)."""

    box_diff: float = 0.0
    score_diff: float = 0.0
    detections: int = 0
    reference_detections: int = 0
    matched: int = 0

    @property
    def ok(self) -> bool:
        """Within tolerance, as many detections, and at least 99 % of them with a twin in the reference (an
        equal-scored pair of overlapping boxes may keep either box, so a few may differ)."""
        return (
            self.box_diff <= BOX_ATOL
            and self.score_diff <= SCORE_ATOL
            and self.detections == self.reference_detections
            and self.matched >= 0.99 * self.detections
        )

    def describe(self) -> str:
        text = f"max |box diff| {self.box_diff:.2e} px, max |score diff| {self.score_diff:.2e}"
        if self.reference_detections:
            text += (
                f", detections {self.detections} vs {self.reference_detections} "
                f"({self.matched} with the same class and box)"
            )
        return text


def sample_inputs(size: tuple[int, int], count: int = 2, dynamic: bool = False) -> list[np.ndarray]:
    """``count`` model inputs (1, 3, H, W) float32 of synthetic frames, as varied as real images in their
    outputs; with ``dynamic`` (a graph of any batch size) one batch of all of them, then the first alone."""
    inputs = [preprocess([frame], size).numpy() for frame in synthetic_frames(count, *size)]
    return [np.concatenate(inputs), inputs[0]] if dynamic else inputs


def raw_parity(run: Callable[[np.ndarray], list[np.ndarray]], reference: Callable, inputs: list[np.ndarray]) -> Parity:
    """``run(images) -> [boxes, scores]`` against ``reference(images) -> (boxes, scores)`` (arrays or tensors;
    e.g. a ``RawOutputs`` module applied to ``torch.from_numpy(images)``)."""
    result = Parity()
    for images in inputs:
        boxes, scores = run(images)
        with torch.inference_mode():
            ref_boxes, ref_scores = (torch.as_tensor(t) for t in reference(images))
        result.box_diff = max(result.box_diff, float(np.abs(boxes - ref_boxes.numpy()).max()))
        result.score_diff = max(result.score_diff, float(np.abs(scores - ref_scores.numpy()).max()))
    return result


def nms_parity(
    run: Callable[[np.ndarray], list[np.ndarray]], reference: Callable, post: PostProcessor, inputs: list[np.ndarray]
) -> Parity:
    """An NMS graph ``run(images) -> [det_batch, det_boxes, det_scores, det_labels]`` against ``PostProcessor`` on
    ``reference(images) -> (boxes, scores)`` raw outputs: those of the same runtime's raw graph, so that the check
    is of the post-processing alone (last-bit differences between runtimes can flip an NMS decision between two
    nearly equal scores; raw outputs are compared with PyTorch by ``raw_parity``). Scores are compared sorted,
    which ties (equal scores kept in either order) cannot change; ``matched`` counts detections with a
    same-class reference box within BOX_ATOL."""
    result = Parity()
    for images in inputs:
        image, boxes, scores, labels = run(images)
        with torch.inference_mode():
            ref_boxes, ref_scores = (torch.as_tensor(t) for t in reference(images))
        for i in range(images.shape[0]):
            ref = post.select_boxes(ref_boxes[i], ref_scores[i])
            mine = image == i
            got_scores, want_scores = np.sort(scores[mine]), np.sort(ref["scores"].numpy())
            result.detections += len(got_scores)
            result.reference_detections += len(want_scores)
            if len(got_scores) != len(want_scores) or not len(got_scores):
                continue
            result.score_diff = max(result.score_diff, float(np.abs(got_scores - want_scores).max()))
            same_class = torch.from_numpy(labels[mine])[:, None] == ref["labels"][None, :]
            got_boxes = torch.from_numpy(boxes[mine])
            close = (got_boxes[:, None, :] - ref["boxes"][None, :, :]).abs().amax(-1) <= BOX_ATOL
            matched = (same_class & close).any(1)
            result.matched += int(matched.sum())
            if matched.any():  # box accuracy of the matched pairs
                iou = box_iou(got_boxes[matched], ref["boxes"]).masked_fill(~same_class[matched], -1)
                best = ref["boxes"][iou.argmax(1)]
                result.box_diff = max(result.box_diff, float((got_boxes[matched] - best).abs().max()))
    return result


def int8_drift(run_fp32: Callable, run_int8: Callable, inputs: list[np.ndarray]) -> dict[str, float]:
    """How far int8 raw outputs move from fp32: max and mean |diff| of boxes (pixels) and scores."""
    box, score = [], []
    for images in inputs:
        (b32, s32), (b8, s8) = run_fp32(images)[:2], run_int8(images)[:2]
        box.append(np.abs(b32 - b8).ravel())
        score.append(np.abs(s32 - s8).ravel())
    box_all, score_all = np.concatenate(box), np.concatenate(score)
    return {
        "box_max": float(box_all.max()),
        "box_mean": float(box_all.mean()),
        "score_max": float(score_all.max()),
        "score_mean": float(score_all.mean()),
    }


def drift_line(drift: dict[str, float], images: int) -> str:
    """The report line of an ``int8_drift`` result over ``images`` calibration images."""
    return (
        f"int8 vs fp32 raw outputs on {images} calibration images: boxes max {drift['box_max']:.3f} px "
        f"(mean {drift['box_mean']:.4f}), scores max {drift['score_max']:.4f} (mean {drift['score_mean']:.5f})"
    )
