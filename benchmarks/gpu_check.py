"""What the paper's recipe will take on this machine (``python tools/benchmark.py gpu``): made for a GPU, runs on
the CPU too.

The recipe (``--config``, default the paper's V3†; ``--set`` as in train_coco.py) is set up as
``tools/train_coco.py`` sets it up (``build_training``: micro-batch, loader workers, AMP, channels-last) on
generated 640x480 JPEGs of the synthetic shapes (or ``--data-root``), then measured:

1. memory: the peak of one forward and backward pass at the micro-batch and at half of it (at the least BatchNorm
   allows and twice that, where the two coincide); their difference per image is the memory per image (CUDA:
   allocated; CPU: the process's peak resident set). With CUDA, also the micro-batch ``train.micro_batch: auto``
   would take.
2. loader: one worker's images/s (read, decode, augment, resize) and the DataLoader's with its workers alone.
3. step: optimiser steps on batches already in memory (the GPU alone), then fed by the loader (end to end).
4. projection: the recipe's steps x batch images at the end-to-end rate, on this one device (N devices under
   torchrun: about N times faster when the loader keeps up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detector import build, config
from detector.data.synthetic import generate
from detector.inference.timing import machine, machine_line
from detector.paper.table6 import COCO_TRAIN_IMAGES
from detector.training import capacity
from detector.training.distributed import DistInfo
from detector.training.engine import batchnorm_to_eval, steps_in, train_step
from detector.training.setup import build_training

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "table6_v3_large_reduced_paper.yaml"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory(t, cfg: config.Config, device: torch.device) -> dict:
    """Peak bytes at half the micro-batch and at the micro-batch (and those sizes), the difference per image, and
    (CUDA) the micro-batch auto takes."""
    micro = t.train_loader.batch_size
    trial = capacity.memory_trial(t.model, t.criterion, cfg.model.image_size, t.settings.amp, cfg.train.channels_last,
                                  cfg.train.freeze_bn)  # fmt: skip
    # Two sizes, increasing (the CPU's peak resident set only grows): half the micro-batch and the micro-batch, or,
    # where they coincide, the least BatchNorm allows (2 in training mode) and twice that.
    half = max(capacity.least_micro_batch(cfg.train.freeze_bn), micro // 2)
    full = micro if micro > half else 2 * half
    low, high = trial(half), trial(full)
    out = {"peak_half": low, "peak": high, "sizes": [half, full], "per_image": max(0.0, (high - low) / (full - half))}
    if device.type == "cuda":
        choice = capacity.choose_on_cuda(cfg.train.batch_size, trial, device, cfg.train.freeze_bn)
        out.update(capacity=choice.capacity, auto=choice.micro_batch, auto_tried=list(choice.tried))
    else:
        out["auto"] = cfg.train.batch_size  # on the CPU auto keeps the whole share
    return out


def _loader_rate(loader, images: int) -> float:
    """Images/s of the DataLoader alone over about ``images`` images (its workers started first)."""
    it, seen = iter(loader), 0
    next(it)
    start = time.perf_counter()
    for images_, _ in it:
        seen += len(images_)
        if seen >= images:
            break
    return seen / (time.perf_counter() - start)


def _step_rates(t, steps: int) -> tuple[float, float]:
    """(images/s of optimiser steps on micro-batches held in memory, images/s fed by the loader)."""
    k, device = t.settings.micro_batches, t.settings.device
    step_images = t.train_loader.batch_size * k
    t.model.train()
    if t.settings.freeze_bn:  # as train_one_epoch runs the steps
        batchnorm_to_eval(t.model)
    cached = next(steps_in(t.train_loader, k))
    train_step(t.net, t.criterion, cached, t.optim, t.settings)  # warm-up: kernels, allocator, optimiser state
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(t.net, t.criterion, cached, t.optim, t.settings)
        _sync(device)
        times.append(time.perf_counter() - start)
    alone = step_images / statistics.median(times)
    done, epoch, start = -1, 0, 0.0
    while done < steps:
        t.train_loader.dataset.set_epoch(epoch)
        t.train_loader.sampler.set_epoch(epoch)
        for batch in steps_in(t.train_loader, k):
            train_step(t.net, t.criterion, batch, t.optim, t.settings)
            _sync(device)
            done += 1
            if done == 0:
                start = time.perf_counter()  # the first step (workers starting) is not timed
            if done == steps:
                break
        epoch += 1
    return alone, step_images * steps / (time.perf_counter() - start)


def _declare_slots(ann_file: Path, cfg: config.Config) -> None:
    """Unused categories added to the generated set until it has the recipe's class slots, so that the measured
    head (and its loss's memory) is the recipe's: COCO's 90 in the paper's."""
    data = json.loads(ann_file.read_text())
    ids = [c["id"] for c in data["categories"]]
    wanted = cfg.model.num_classes
    if cfg.data.class_slots == "category_id":
        extra = [wanted] if wanted > max(ids) else []
    else:
        extra = list(range(max(ids) + 1, max(ids) + 1 + max(0, wanted - len(ids))))
    data["categories"] += [{"id": i, "name": f"unused {i}", "supercategory": "none"} for i in extra]
    ann_file.write_text(json.dumps(data))


def run(recipe: Path, sets: list[str], data_root: str | None, images: int, steps: int, device: str) -> dict:
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        root = data_root
        if root is None:
            cfg = config.load(recipe, sets)
            count = max(images, cfg.train.batch_size * 2)  # two steps per epoch at least
            root = str(generate(Path(tmp) / "data", num_train=count, num_val=0, size_range=(480, 640)))
            _declare_slots(Path(root) / "annotations" / "instances_train2017.json", cfg)
            sets = [*sets, "data.preflight=false"]  # generated files: nothing to check
        cfg = config.load(recipe, [*sets, f"data.data_root={root}"])
        train_set, _ = build.build_datasets(cfg, validate=False)
        torch.manual_seed(0)
        t = build_training(cfg, train_set, None, DistInfo(device=dev))
        memory = _memory(t, cfg, dev)
        worker = capacity.worker_images_per_s(train_set)
        loader = _loader_rate(t.train_loader, t.train_loader.batch_size * t.settings.micro_batches * steps)
        alone, end_to_end = _step_rates(t, steps)
    train_images = COCO_TRAIN_IMAGES if data_root is None else len(train_set)
    total_steps = cfg.train.epochs * (train_images // cfg.train.batch_size)
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "recipe": Path(recipe).name,
        "model": f"{cfg.model.backbone} width {cfg.model.width:g}{' reduced tail' if cfg.model.reduced_tail else ''}",
        "image_size": list(cfg.model.image_size),
        "batch_size": cfg.train.batch_size,
        "micro_batch": t.train_loader.batch_size,
        "micro_batches_per_step": t.settings.micro_batches,
        "amp": t.settings.amp,
        "channels_last": cfg.train.channels_last,
        "workers": t.train_loader.num_workers,
        "memory_bytes": memory,
        "worker_images_per_s": worker,
        "loader_images_per_s": loader,
        "step_images_per_s": alone,
        "end_to_end_images_per_s": end_to_end,
        "recipe_steps": total_steps,
        "projected_hours": total_steps * cfg.train.batch_size / end_to_end / 3600,
        "machine": machine(("torch", "torchvision", "opencv-python", "opencv-python-headless", "albumentations")),
    }


def report_lines(r: dict) -> list[str]:
    mb, gib, m = 2**20, 2**30, r["memory_bytes"]
    size = "x".join(map(str, r["image_size"]))
    half, full = m["sizes"]
    memory = f"{m['per_image'] / mb:.0f} MB per image (peak {m['peak'] / gib:.2f} GiB at {full} images"
    memory += f", {m['peak_half'] / gib:.2f} GiB at {half})" + (
        f"; {m['capacity'] / gib:.1f} GiB on the card" if "capacity" in m else ""
    )
    auto = f"auto would take {m['auto']}" + (f" (tried {', '.join(map(str, m['auto_tried']))})" if "auto_tried" in m
                                             else " (on the CPU: the whole share)")  # fmt: skip
    held = r["end_to_end_images_per_s"] < 0.9 * r["step_images_per_s"]
    verdict = ("held up by the loader: more data.workers, faster storage or decoding" if held
               else "the device is the limit, the loader keeps up")  # fmt: skip
    hours = r["projected_hours"]
    return [
        f"machine check on {r['device']}: {r['recipe']} ({r['model']} at {size}, batch {r['batch_size']}, "
        f"AMP {'on' if r['amp'] else 'off'}, channels-last {'on' if r['channels_last'] else 'off'})",
        f"  micro-batch   {r['micro_batch']} images per forward pass, {r['micro_batches_per_step']} per optimiser "
        f"step; {auto}",
        f"  memory        {memory}",
        f"  loader        one worker {r['worker_images_per_s']:.0f} images/s; the DataLoader with data.workers "
        f"{r['workers']}: {r['loader_images_per_s']:.0f} images/s",
        f"  step alone    {r['step_images_per_s']:.1f} images/s (batches already in memory)",
        f"  end to end    {r['end_to_end_images_per_s']:.1f} images/s, {verdict}",
        f"  full recipe   {r['recipe_steps']} steps x {r['batch_size']} images: {hours:.1f} h ({hours / 24:.1f} days) "
        f"on this device",
        "  " + machine_line(r["machine"]),
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(DEFAULT_RECIPE), help="the recipe (default: the paper's V3†)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--data-root", help="COCO-format data to load (default: generated 640x480 JPEGs)")
    p.add_argument("--images", type=int, default=1024, help="generated training images (at least two steps' worth)")
    p.add_argument("--steps", type=int, default=3, help="timed optimiser steps, each way")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    result = run(Path(args.config), args.set, args.data_root, args.images, args.steps, args.device)
    print(json.dumps(result, indent=1) if args.json else "\n".join(report_lines(result)))
    return 0
