"""Training throughput, ours and torchvision's side by side in one run, printed as ratios.

    python tools/benchmark_train.py [--images 200] [--batch 8] [--steps 6] [--device cpu|cuda] [--json]

1. Data pipeline, one process (= one DataLoader worker), on 640x480 COCO-sized JPEGs: decode + SSD crop +
   flip + resize to 320x320, ours (OpenCV + albumentations) against torchvision.transforms.v2 (RandomIoUCrop +
   RandomHorizontalFlip + Resize + SanitizeBoundingBoxes, images decoded with torchvision.io and with PIL as
   torchvision's reference scripts do).
2. Training step (uint8 batch to float, forward + loss + backward + SGD step) of SSDLite MobileNetV3-Large† at
   320x320: ours through the training engine's ``train_step`` in torchvision's layout and loss (the same
   network and work as torchvision's) and in the paper layout, and torchvision's ssdlite320_mobilenet_v3_large
   ``model(images, targets)``. On CUDA with AMP and channels-last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import torch

from detector import cli
from detector.build import build_criterion, build_model
from detector.config import LossConfig, ModelConfig
from detector.training.throughput import (
    make_jpegs,
    ours_pipeline,
    ours_train_rate,
    torchvision_pipeline,
    torchvision_train_rate,
)


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
    steps = {"torchvision": torchvision_train_rate(args.batch, args.steps, device)}
    for name, layout, loss in (
        ("ours-torchvision-layout", "torchvision", "softmax_hnm"),
        ("ours-paper", "paper", "focal"),
    ):
        model, criterion = build_model(ModelConfig(layout=layout)), build_criterion(LossConfig(kind=loss))
        steps[name] = ours_train_rate(model, criterion, args.batch, args.steps, device)
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
