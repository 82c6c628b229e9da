"""A COCO-format detection dataset: checked records (``detector.data.annotations``), decoding and transforms.

The dataset serves training and evaluation inputs only; the pycocotools ground truth for scoring is built by
``detector.evaluation`` from the same annotation file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detector.data.annotations import ImageRecord, read_annotation_json, read_coco_records
from detector.data.image_io import read_image
from detector.data.preflight import check_images
from detector.data.transforms import apply_transform
from detector.errors import UserError

log = logging.getLogger(__name__)


class CocoDetection(Dataset):
    """Item i -> (image (H, W, 3) uint8 at the model size (float32 in [0, 255] with TF's resize), target dict.

    target: ``boxes`` (M, 4) float32 xyxy input pixels, ``labels`` (M,) int64 1..C, ``crowd_boxes`` (G, 4),
    ``image_id`` int, ``orig_size`` (H, W) of the source image. An image that cannot be read is replaced by
    the next readable one (logged once), so that a bad file does not stop a week-long run. ``id_slots``: label k
    is category id k (see ``read_coco_records``). ``exif``: apply EXIF orientation (default: pixels as stored,
    which COCO's boxes refer to).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        transform,
        seed: int = 0,
        preflight: bool = False,
        id_slots: bool = False,
        exif: bool = False,
    ) -> None:
        self.exif = exif
        self.ann_file = Path(ann_file)
        data = read_annotation_json(ann_file)
        self.records, self.categories, self.report = read_coco_records(data, ann_file, image_dir, id_slots)
        if preflight:
            self.records = check_images(self.records, self.report)
        self.report.log(str(ann_file))
        if self.report.problems:
            log.warning(
                "%s: %d problems in all (tools/check_dataset.py lists each); %d usable images",
                ann_file,
                len(self.report.problems),
                len(self.records),
            )
        if not self.records:
            raise UserError(f"{ann_file}: no usable images")
        self.transform = transform
        self.seed = seed
        # in shared memory: loader workers that live across epochs (persistent_workers) see each set_epoch
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._bad: set[int] = set()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index) only: resumable and worker-independent. Call it
        before iterating a loader for the epoch: its workers, forked or spawned, share the value."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, ImageRecord]:
        rec = self.records[index]
        return read_image(rec.path, self.exif), rec

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict]:
        for offset in range(len(self.records)):
            i = (index + offset) % len(self.records)
            if i in self._bad:
                continue
            try:
                image, rec = self.load(i)
                break
            except UserError as exc:
                self._bad.add(i)
                log.warning("skipping unreadable image: %s", exc)
        else:
            raise UserError("no readable image in the dataset")
        boxes = np.concatenate([rec.boxes, rec.crowd])
        labels = np.concatenate([rec.labels, -np.ones(len(rec.crowd), np.int64)])
        # Clip again against the decoded size: the JSON's width/height may be wrong.
        h, w = image.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        seed = (self.seed * 1_000_003 + self.epoch * 100_003 + index) % 2**32
        image, boxes, labels = apply_transform(self.transform, image, boxes[ok], labels[ok], seed)
        crowd = labels < 0
        return image, {
            "boxes": torch.from_numpy(boxes[~crowd]),
            "labels": torch.from_numpy(labels[~crowd]),
            "crowd_boxes": torch.from_numpy(boxes[crowd]),
            "image_id": rec.image_id,
            "orig_size": (h, w),
        }


def eval_loader(dataset: CocoDetection, batch_size: int = 16, workers: int = 2, persistent: bool = False) -> DataLoader:
    """Batches of a plain-resize dataset in order, for evaluation; ``persistent``: its workers live on between
    passes (evaluation after every training epoch) instead of starting anew each time."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                      persistent_workers=persistent and workers > 0)  # fmt: skip


def collate(batch: list[tuple[np.ndarray, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """-> images (N, H, W, 3) uint8 or float32 (converted to the model input on the device), list of targets."""
    return torch.from_numpy(np.stack([b[0] for b in batch])), [b[1] for b in batch]
