"""Run a detector over a dataset and collect COCO results records (used by evaluation and training)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detector.evaluation import to_coco_results
from detector.ssd.postprocess import PostProcessor


@torch.inference_mode()
def predict_coco(
    model: torch.nn.Module,
    post: PostProcessor,
    loader: DataLoader,
    category_ids: list[int],
    device: torch.device,
    progress: bool = True,
) -> list[dict]:
    """Detections of every image of ``loader`` (a CocoDetection loader with a plain resize) as COCO results.

    Boxes are mapped back to each image's original size; labels 1..C map to ``category_ids``.
    """
    was_training = model.training
    model.eval()
    ids = torch.tensor(category_ids)
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        x = images.to(device).permute(0, 3, 1, 2).float().div_(255.0)
        boxes, logits = model(x)
        input_size = tuple(x.shape[-2:])
        dets = post(boxes.float(), logits.float(), model.anchors.float(), input_size, [t["orig_size"] for t in targets])
        for det, t in zip(dets, targets):
            results += to_coco_results(
                t["image_id"],
                det["boxes"].cpu().numpy(),
                det["scores"].cpu().numpy(),
                ids[det["labels"].cpu() - 1].numpy(),
            )
    model.train(was_training)
    return results
