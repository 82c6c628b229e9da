"""Training throughput, ours and torchvision's side by side in one run, printed as ratios
(``python tools/benchmark.py train``).

1. Data pipeline, one process (= one DataLoader worker), on 640x480 COCO-sized JPEGs of the synthetic shapes:
   decode + SSD crop + flip + resize to 320x320, ours (OpenCV + albumentations) against
   torchvision.transforms.v2 (RandomIoUCrop + RandomHorizontalFlip + Resize + SanitizeBoundingBoxes, images
   decoded with torchvision.io and with PIL as torchvision's reference scripts do).
2. Training step (uint8 batch to float, forward + loss + backward + SGD step) of SSDLite MobileNetV3-Large† at
   320x320: ours through the training engine's ``train_step`` in torchvision's layout and loss (the same
   network and work as torchvision's) and in the paper layout, and torchvision's ssdlite320_mobilenet_v3_large
   ``model(images, targets)``, stepped as its reference scripts do. On CUDA with AMP and channels-last.

Both are timed with ``detector.inference.timing.interleaved``: the contestants take turns.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from detector.build import build_criterion, build_model
from detector.config import LossConfig, ModelConfig
from detector.data.image_io import read_image, to_model_input
from detector.data.synthetic import render_image, synthetic_frames
from detector.data.transforms import apply_transform, build_transform
from detector.inference.timing import interleaved, machine, machine_line
from detector.training.engine import StepSettings, train_step
from detector.training.optim import Optimisation

Item = tuple[Path, np.ndarray, np.ndarray]  # a JPEG file, its boxes (M, 4) xyxy pixels, its labels (M,)


def make_jpegs(folder: Path, count: int) -> list[Item]:
    """``count`` 640x480 JPEGs of the synthetic shapes with their boxes and labels."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        img, objects = render_image(rng, 480, 640)
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        boxes = np.array([o[1] for o in objects], np.float32).reshape(-1, 4)
        items.append((path, boxes, np.array([o[0] + 1 for o in objects], np.int64)))
    return items


def ours_pipeline(items: list[Item]) -> Callable[[], None]:
    transform = build_transform((320, 320), ["ssd_crop", "hflip"])

    def run() -> None:
        for i, (path, boxes, labels) in enumerate(items):
            image, _, _ = apply_transform(transform, read_image(path), boxes, labels, seed=i)
            torch.from_numpy(image)

    return run


def torchvision_pipeline(items: list[Item], decoder: str) -> Callable[[], None]:
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomIoUCrop(), v2.RandomHorizontalFlip(), v2.Resize((320, 320), antialias=True),
                            v2.SanitizeBoundingBoxes(), v2.ToDtype(torch.uint8)])  # fmt: skip

    def run() -> None:
        for path, boxes, labels in items:
            if decoder == "pil":
                image = v2.functional.pil_to_tensor(Image.open(path).convert("RGB"))
            else:
                image = decode_jpeg(read_file(str(path)))
            image = tv_tensors.Image(image)
            canvas = image.shape[-2:]
            target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=canvas),
                      "labels": torch.from_numpy(labels)}  # fmt: skip
            transform(image, target)

    return run


def _batch(batch: int) -> tuple[torch.Tensor, list[dict]]:
    """A loader-like batch: (N, 320, 320, 3) uint8 synthetic frames and two boxes per image."""
    images = torch.from_numpy(np.stack(synthetic_frames(batch, 320, 320)))
    boxes = torch.tensor([[30.0, 40.0, 200.0, 220.0], [150.0, 60.0, 300.0, 300.0]])
    return images, [{"boxes": boxes, "labels": torch.tensor([1, 5]), "image_id": i} for i in range(batch)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours_step(layout: str, loss: str, batch: int, device: torch.device) -> Callable[[], None]:
    """The engine's ``train_step`` on our SSDLite V3† (AMP and channels-last on CUDA, as training runs)."""
    amp = device.type == "cuda"
    model = build_model(ModelConfig(layout=layout)).to(device).train()
    if amp:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(LossConfig(kind=loss))
    images, targets = _batch(batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    optim = Optimisation(optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=amp))
    settings = StepSettings(device, amp=amp, channels_last=amp)

    def step() -> None:
        train_step(model, criterion, [(images, targets)], optim, settings)
        _sync(device)

    return step


def torchvision_step(batch: int, device: torch.device) -> Callable[[], None]:
    """torchvision's ssdlite320_mobilenet_v3_large stepped as its reference scripts do:
    ``sum(model(images, targets).values())``, backward, SGD (AMP on CUDA)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    amp = device.type == "cuda"
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images, targets = _batch(batch)
    targets = [{k: v.to(device) for k, v in t.items() if k != "image_id"} for t in targets]

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = sum(model(list(to_model_input(images, device)), targets).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        _sync(device)

    return step


def run(images: int = 200, batch: int = 8, steps: int = 6, device: str = "cpu") -> dict:
    """Both benchmarks: {"device", "data_images_per_s", "data_ratio_vs_torchvision_io",
    "data_ratio_vs_torchvision_pil", "train_images_per_s", "train_ratio_vs_torchvision", "threads"}."""
    threads = torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)  # one worker process = one thread for the data pipeline
    dev = torch.device(device)
    results: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        items = make_jpegs(Path(tmp), images)
        torch.manual_seed(0)
        calls = {"ours": ours_pipeline(items), "torchvision_io": torchvision_pipeline(items, "torchvision.io"),
                 "torchvision_pil": torchvision_pipeline(items, "pil")}  # fmt: skip
        medians, _ = interleaved(calls, rounds=1, warmup=0)
    data = {name: images / (ms["e2e"] / 1e3) for name, ms in medians.items()}
    results["data_images_per_s"] = data
    results["data_ratio_vs_torchvision_io"] = data["ours"] / data["torchvision_io"]
    results["data_ratio_vs_torchvision_pil"] = data["ours"] / data["torchvision_pil"]
    torch.set_num_threads(threads)
    results["threads"] = threads
    torch.manual_seed(0)
    calls = {"torchvision": torchvision_step(batch, dev),
             "ours-torchvision-layout": ours_step("torchvision", "softmax_hnm", batch, dev),
             "ours-paper": ours_step("paper", "focal", batch, dev)}  # fmt: skip
    medians, _ = interleaved(calls, rounds=steps, warmup=2)
    train = {name: batch / (ms["e2e"] / 1e3) for name, ms in medians.items()}
    results["train_images_per_s"] = train
    tv = train["torchvision"]
    results["train_ratio_vs_torchvision"] = {k: v / tv for k, v in train.items() if k != "torchvision"}
    return results


def report_lines(results: dict, batch: int) -> list[str]:
    """The printed report of ``run``'s results."""
    data, train = results["data_images_per_s"], results["train_images_per_s"]
    lines = [
        f"data pipeline, 1 process, 640x480 JPEG -> 320x320 (images/s) on {results['device']}:",
        f"  ours (OpenCV + albumentations)        {data['ours']:8.1f}",
        f"  torchvision v2, torchvision.io decode {data['torchvision_io']:8.1f}   "
        f"ours / it = {results['data_ratio_vs_torchvision_io']:.2f}x",
        f"  torchvision v2, PIL decode            {data['torchvision_pil']:8.1f}   "
        f"ours / it = {results['data_ratio_vs_torchvision_pil']:.2f}x",
        f"training step, batch {batch} at 320x320 (images/s, {results['threads']} threads):",
    ]
    for name, rate in train.items():
        ratio = "" if name == "torchvision" else f"   ours / torchvision = {rate / train['torchvision']:.2f}x"
        lines.append(f"  {name:<28} {rate:8.2f}{ratio}")
    return [*lines, machine_line(results["machine"])]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=200, help="JPEGs for the data-pipeline benchmark")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    results = run(args.images, args.batch, args.steps, args.device)
    print(json.dumps(results, indent=1) if args.json else "\n".join(report_lines(results, args.batch)))
    return 0
