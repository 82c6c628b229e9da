"""Latency of the inference paths, stage by stage, for tools/benchmark.py.

A *path* turns a batch of decoded (H, W, 3) uint8 RGB frames into detections and reports the milliseconds
of its stages: ``pre`` (frame -> model input), ``model`` (network), ``post`` (detections in frame pixels) and
``e2e`` (the whole call, measured around it). Our paths are the real ``Detector`` / ``OnnxDetector`` calls
(their own stage timers); torchvision's is its ``model(list_of_images)`` call for ``e2e`` and the same steps
called one by one (``transform``; ``backbone`` + ``head`` + anchors; ``postprocess_detections`` +
``transform.postprocess``) for the split.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from detector.deploy.torch_runtime import StageTimes

STAGES = ("pre", "model", "post", "e2e")


@dataclass
class Timing:
    """Median milliseconds per call of each stage over ``repeats`` calls of a batch."""

    path: str
    threads: int
    batch: int
    repeats: int
    ms: dict[str, float] = field(default_factory=dict)


def _median(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def measure(calls: dict[str, Callable[[], dict[str, float]]], repeats: int, warmup: int,
            budget_s: float) -> tuple[dict[str, dict[str, float]], int]:  # fmt: skip
    """Time every call of ``calls`` (each returns its stage milliseconds) in rounds: ``warmup`` untimed rounds,
    then up to ``repeats`` timed ones, the calls interleaved within each round so that background load on
    the machine affects every path alike. Fewer rounds (at least 3) when ``repeats`` rounds would take more
    than ``budget_s`` seconds. Returns ({name: median stage milliseconds}, rounds timed).
    """
    start = time.perf_counter()
    for _ in range(warmup):
        for call in calls.values():
            call()
    per_round = (time.perf_counter() - start) / max(warmup, 1)
    rounds = max(3, min(repeats, int(budget_s / max(per_round, 1e-6)))) if warmup else repeats
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].append(call())
    return {name: _median(s) for name, s in samples.items()}, rounds


def detector_call(detector, frames: list[np.ndarray]) -> Callable[[], dict[str, float]]:
    """A ``Detector`` or ``OnnxDetector`` on ``frames``: stages from its own ``times``, e2e around the call."""

    def call() -> dict[str, float]:
        detector.times = StageTimes()
        t0 = time.perf_counter()
        detector(frames)
        e2e = (time.perf_counter() - t0) * 1e3
        t = detector.times
        return {"pre": t.preprocess, "model": t.model, "post": t.postprocess, "e2e": e2e}

    return call


def torchvision_images(frames: list[np.ndarray]) -> list[torch.Tensor]:
    """(H, W, 3) uint8 RGB frames -> the (3, H, W) float tensors in [0, 1] torchvision's detectors take."""
    return [torch.from_numpy(f).permute(2, 0, 1).float().div_(255.0) for f in frames]


def torchvision_calls(tv: torch.nn.Module, frames: list[np.ndarray]) -> tuple[Callable, Callable]:
    """(the full ``tv(images)`` call, the same steps one by one with a stage split) on ``frames``.

    Both include turning the uint8 frames into the float CHW tensors torchvision takes (part of ``pre``).
    """

    @torch.inference_mode()
    def full() -> dict[str, float]:
        t0 = time.perf_counter()
        tv(torchvision_images(frames))
        return {"e2e": (time.perf_counter() - t0) * 1e3}

    @torch.inference_mode()
    def split() -> dict[str, float]:
        t0 = time.perf_counter()
        images = torchvision_images(frames)
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        batch, _ = tv.transform(images)
        t1 = time.perf_counter()
        features = list(tv.backbone(batch.tensors).values())
        head_outputs = tv.head(features)
        anchors = tv.anchor_generator(batch, features)
        t2 = time.perf_counter()
        dets = tv.postprocess_detections(head_outputs, anchors, batch.image_sizes)
        tv.transform.postprocess(dets, batch.image_sizes, original_sizes)
        t3 = time.perf_counter()
        return {"pre": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3, "e2e": (t3 - t0) * 1e3}

    return full, split


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, forward: Callable[[], object]) -> None:
    """Set every BatchNorm's running statistics to those of the activations seen in ``forward()`` (a call
    through ``model``), as a trained network's statistics are: its activations then keep unit scale.

    Fresh random weights leave BatchNorm as the identity and the activations shrink layer by layer (in
    torchvision's SSDLite to 1e-15 at the head, so that every score is exactly 1/91 and every box its
    anchor); timing post-processing on such outputs measures ties, not detections.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calls
        m.train()
    try:
        forward()
    finally:
        for m, (training, momentum) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum
