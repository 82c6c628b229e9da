"""Run a detector over a dataset and collect COCO results records (used by evaluation and training)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detector.data.image_io import to_model_input
from detector.evaluation.coco_eval import to_coco_results
from detector.ssd.detections import LabelMap
from detector.ssd.postprocess import PostProcessor


@torch.inference_mode()
def predict_coco(
    model: torch.nn.Module,
    post: PostProcessor,
    loader: DataLoader,
    labels: LabelMap,
    device: torch.device,
    progress: bool = True,
) -> list[dict]:
    """Detections of every image of ``loader`` (a CocoDetection loader with a plain resize) as COCO results.

    Boxes are mapped back to each image's original size; labels 1..C map to the dataset's ids by ``labels``.
    """
    was_training = model.training
    model.eval()
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        boxes, logits = model(to_model_input(images, device))
        dets = post(boxes.float(), logits.float(), [t["orig_size"] for t in targets])
        for det, t in zip(dets, targets):
            d = labels.detections(det["boxes"], det["scores"], det["labels"])
            results += to_coco_results(t["image_id"], d.boxes, d.scores, d.category_ids)
    model.train(was_training)
    return results
