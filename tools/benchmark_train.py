"""Training throughput, ours and torchvision's side by side in one run, printed as ratios.

    python tools/benchmark_train.py [--images 200] [--batch 8] [--steps 6] [--device cpu|cuda] [--json]

1. Data pipeline, one process (= one DataLoader worker), on 640x480 COCO-sized JPEGs: decode + SSD crop +
   flip + resize to 320x320, ours (OpenCV + albumentations) against torchvision.transforms.v2 (RandomIoUCrop +
   RandomHorizontalFlip + Resize + SanitizeBoundingBoxes, images decoded with torchvision.io and with PIL as
   torchvision's reference scripts do).
2. Training step (forward + loss + backward + SGD step) of SSDLite MobileNetV3-Large† at 320x320: ours in
   torchvision's layout and loss (the same network and work as torchvision's), ours in the paper layout, and
   torchvision's ssdlite320_mobilenet_v3_large ``model(images, targets)``. On CUDA with AMP and channels-last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from detector import cli
from detector.build import build_criterion, build_model
from detector.config import LossConfig, ModelConfig
from detector.data.image_io import read_image
from detector.data.synthetic import render_image
from detector.data.transforms import apply_transform, build_transform


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


def train_step_rate(kind: str, batch: int, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    amp = device.type == "cuda"
    images = torch.rand(batch, 3, 320, 320, device=device)
    targets = [
        {
            "boxes": torch.tensor([[30.0, 40.0, 200.0, 220.0], [150.0, 60.0, 300.0, 300.0]], device=device),
            "labels": torch.tensor([1, 5], device=device),
        }
        for _ in range(batch)
    ]
    if kind == "torchvision":
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).to(device).train()
        image_list = list(images)

        def loss_fn():
            return sum(model(image_list, targets).values())
    else:
        layout, loss = ("torchvision", "softmax_hnm") if kind == "ours-torchvision-layout" else ("paper", "focal")
        model = build_model(ModelConfig(layout=layout)).to(device).train()
        criterion = build_criterion(LossConfig(kind=loss))
        if amp:
            model = model.to(memory_format=torch.channels_last)

        def loss_fn():
            box, logits = model(images)
            return criterion(box.float(), logits.float(), model.anchors, targets)["total"]

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="JPEGs for the data-pipeline benchmark")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    threads = torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)  # one worker process = one thread for the data pipeline
    results: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        items = make_jpegs(Path(tmp), args.images)
        ours = ours_pipeline(items)
        tv_io = torchvision_pipeline(items, "torchvision.io")
        tv_pil = torchvision_pipeline(items, "pil")
    results["data_images_per_s"] = {"ours": ours, "torchvision_io": tv_io, "torchvision_pil": tv_pil}
    results["data_ratio_vs_torchvision_io"] = ours / tv_io
    results["data_ratio_vs_torchvision_pil"] = ours / tv_pil
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    steps = {
        k: train_step_rate(k, args.batch, args.steps, device)
        for k in ("torchvision", "ours-torchvision-layout", "ours-paper")
    }
    results["train_images_per_s"] = steps
    results["train_ratio_vs_torchvision"] = {
        k: v / steps["torchvision"] for k, v in steps.items() if k != "torchvision"
    }
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"data pipeline, 1 process, 640x480 JPEG -> 320x320 (images/s) on {results['device']}:")
    print(f"  ours (OpenCV + albumentations)        {ours:8.1f}")
    print(f"  torchvision v2, torchvision.io decode {tv_io:8.1f}   ours / it = {ours / tv_io:.2f}x")
    print(f"  torchvision v2, PIL decode            {tv_pil:8.1f}   ours / it = {ours / tv_pil:.2f}x")
    print(f"training step, batch {args.batch} at 320x320 (images/s, {torch.get_num_threads()} threads):")
    for k, v in steps.items():
        ratio = "" if k == "torchvision" else f"   ours / torchvision = {v / steps['torchvision']:.2f}x"
        print(f"  {k:<28} {v:8.2f}{ratio}")
    return 0


if __name__ == "__main__":
    cli.run(main)
