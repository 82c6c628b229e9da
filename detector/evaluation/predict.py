"""Run a detector over a dataset and collect COCO results records (used by evaluation and training)."""

from __future__ import annotations

from torch.utils.data import DataLoader
from tqdm import tqdm

from detector.evaluation.coco_eval import to_coco_results
from detector.inference.runner import Runner


def predict_coco(runner: Runner, loader: DataLoader, progress: bool = True) -> list[dict]:
    """Detections of every image of ``loader`` (a CocoDetection loader with a plain resize to the runner's
    input size: (N, H, W, 3) batches) by ``runner`` (any runtime), as COCO results records.

    Every detection the model's post-processing keeps is scored (its own score threshold, no class filter);
    boxes are mapped back to each image's original size, labels 1..C to the dataset's category ids.
    """
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        dets = runner.detect_resized(images, [tuple(t["orig_size"]) for t in targets])
        for d, t in zip(dets, targets):
            results += to_coco_results(t["image_id"], d.boxes, d.scores, d.category_ids)
    return results
