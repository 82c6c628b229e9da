"""Training throughput, ours and torchvision's, measured the same way (tools/benchmark_train.py prints ratios).

Data pipeline: 640x480 JPEGs -> decode + crop + flip + resize to 320x320, one process (= one DataLoader
worker). Training step: uint8 batch (N, 320, 320, 3) -> float -> forward + loss + backward + SGD step, ours
through the engine's ``train_step``.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from detector.data.image_io import read_image, to_model_input
from detector.data.synthetic import render_image
from detector.data.transforms import apply_transform, build_transform
from detector.training.engine import StepSettings, train_step


def make_jpegs(folder: Path, count: int) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        img, objects = render_image(rng, 480, 640)
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        boxes = np.array([o[1] for o in objects], np.float32).reshape(-1, 4)
        items.append((path, boxes, np.array([o[0] + 1 for o in objects], np.int64)))
    return items


def ours_pipeline(items) -> float:
    transform = build_transform((320, 320), ["ssd_crop", "hflip"])
    start = time.perf_counter()
    for i, (path, boxes, labels) in enumerate(items):
        image, b, lab = apply_transform(transform, read_image(path), boxes, labels, seed=i)
        torch.from_numpy(image)
    return len(items) / (time.perf_counter() - start)


def torchvision_pipeline(items, decoder: str) -> float:
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(),
            v2.Resize((320, 320), antialias=True),
            v2.SanitizeBoundingBoxes(),
            v2.ToDtype(torch.uint8),
        ]
    )
    torch.manual_seed(0)
    start = time.perf_counter()
    for path, boxes, labels in items:
        if decoder == "pil":
            image = v2.functional.pil_to_tensor(Image.open(path).convert("RGB"))
        else:
            image = decode_jpeg(read_file(str(path)))
        image = tv_tensors.Image(image)
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=image.shape[-2:]),
            "labels": torch.from_numpy(labels),
        }
        transform(image, target)
    return len(items) / (time.perf_counter() - start)


def _batch(batch: int) -> tuple[torch.Tensor, list[dict]]:
    """A loader-like batch: (N, 320, 320, 3) uint8 images and two boxes per image."""
    images = (torch.rand(batch, 320, 320, 3) * 255).to(torch.uint8)
    boxes = torch.tensor([[30.0, 40.0, 200.0, 220.0], [150.0, 60.0, 300.0, 300.0]])
    return images, [{"boxes": boxes, "labels": torch.tensor([1, 5]), "image_id": i} for i in range(batch)]


def _rate(step, batch: int, steps: int, device: torch.device) -> float:
    """Images per second of ``step()`` over ``steps`` calls after 2 warm-up calls."""
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def ours_train_rate(model: torch.nn.Module, criterion, batch: int, steps: int, device: torch.device) -> float:
    """Images per second of the engine's ``train_step`` (AMP and channels-last on CUDA, as training runs)."""
    torch.manual_seed(0)
    amp = device.type == "cuda"
    model = model.to(device).train()
    if amp:
        model = model.to(memory_format=torch.channels_last)
    images, targets = _batch(batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    settings = StepSettings(device, amp=amp, channels_last=amp)
    return _rate(lambda: train_step(model, criterion, opt, scheduler, scaler, None, images, targets, settings),
                 batch, steps, device)  # fmt: skip


def torchvision_train_rate(batch: int, steps: int, device: torch.device) -> float:
    """Images per second of torchvision's ssdlite320_mobilenet_v3_large stepped as its reference scripts do:
    ``sum(model(images, targets).values())``, backward, SGD (AMP on CUDA)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    amp = device.type == "cuda"
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images, targets = _batch(batch)
    targets = [{k: v.to(device) for k, v in t.items() if k != "image_id"} for t in targets]

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = sum(model(list(to_model_input(images, device)), targets).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return _rate(step, batch, steps, device)
