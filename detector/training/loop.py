"""The epoch loop of a run: train, evaluate, keep last.pt / best.pt, log; stop cleanly on request.

``Training`` holds the objects a recipe describes (``detector.training.setup.build_training`` makes them); ``fit``
runs them from a ``RunState`` (fresh, or restored from a checkpoint) and writes into one output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torch import nn
from torch.utils.data import DataLoader

from detector import checkpoint
from detector.errors import UserError
from detector.ssd.detections import LabelMap
from detector.ssd.postprocess import PostProcessor
from detector.training import capacity, distributed
from detector.training.engine import StepSettings, TrainingStopped, evaluate, train_one_epoch
from detector.training.faults import FaultInjector
from detector.training.optim import Optimisation
from detector.training.payload import training_payload
from detector.training.run_log import RunLog
from detector.training.state import RunState


class TrainingInterrupted(UserError):
    """SIGINT or SIGTERM: a checkpoint was saved at the next safe point."""


@dataclass
class Training:
    """The objects of one run. ``net`` is what the steps call (``model``, or it wrapped in DDP)."""

    model: nn.Module
    net: nn.Module
    criterion: object
    post: PostProcessor
    optim: Optimisation
    train_loader: DataLoader
    val_loader: DataLoader | None
    val_gt: COCO | None
    labels: LabelMap
    settings: StepSettings
    config: dict  # the resolved recipe as plain data; it travels in every checkpoint
    epochs: int
    steps_per_epoch: int  # optimiser steps
    eval_every: int  # epochs between evaluations (0: only at the end)
    checkpoint_every: int  # steps between mid-epoch saves of last.pt (0: at epoch ends only)

    def eval_model(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA when enabled."""
        return self.optim.ema.module if self.optim.ema is not None else self.model

    def payload(self, state: RunState) -> dict:
        return training_payload(self.model, self.config, self.labels.categories, self.optim, state)


class OutOfMemory(UserError):
    """The device ran out of memory in a training step; nothing was saved after the last good checkpoint."""


def out_of_memory_message(t: Training, state: RunState, during: str, saved: Path | None) -> str:
    """One line for an out-of-memory error in a training step: where it happened (``during``), the micro-batch and
    memory, the checkpoint to continue from (``saved``, holding the state at ``state.step`` or before; None: none
    yet), what to change."""
    micro, per_step = t.train_loader.batch_size, t.train_loader.batch_size * t.settings.micro_batches
    smaller = capacity.smaller_micro_batch(per_step, micro, t.settings.freeze_bn)
    if smaller is None:
        change = "model.image_size smaller (no smaller micro-batch: it is 1)"
    else:  # BatchNorm needs 2 images in training mode
        change = f"train.micro_batch={smaller[0]}" + (" train.freeze_bn=true" if smaller[1] else "")
    kept = (
        f"continue from {saved} with --resume {saved} --set {change}"
        if saved is not None
        else f"no checkpoint was written yet; start again with --set {change}"
    )
    auto = t.settings.device.type == "cuda" and smaller is not None and not smaller[1]
    return (
        f"out of memory on {t.settings.device} {during} with train.micro_batch {micro} ({t.settings.micro_batches} "
        f"per step of {per_step} images on this process), {_memory(t.settings.device)}; {kept}"
        + (" (or train.micro_batch=auto: the largest that fits)" if auto else "")
    )


def _memory(device: torch.device) -> str:
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} of {total / 2**30:.1f} GiB"
    return f"peak resident {capacity.peak_resident_bytes() / 2**30:.1f} GiB"


def evaluation_out_of_memory_message(t: Training, epoch: int, saved: Path) -> str:
    """One line for an out-of-memory error in the evaluation after epoch ``epoch`` (whose training ``saved``
    holds): a smaller micro-batch would not help, the evaluation's batch is its own."""
    return (
        f"out of memory on {t.settings.device} in the evaluation after epoch {epoch}, "
        f"{_memory(t.settings.device)}; {saved} holds the end of epoch {epoch} (its evaluation is skipped); "
        f"continue with --resume {saved} (the evaluation puts {t.val_loader.batch_size} images through each pass; "
        "free the device's memory, or --no-val to train without evaluating)"
    )


class StopRequest:
    """Set from a signal handler; every process stops after the same step once any process was asked."""

    def __init__(self) -> None:
        self.requested = False

    def now(self) -> bool:
        if distributed.world_size() == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], dtype=torch.float64)
        return distributed.all_reduce_sum(flag).item() > 0


def fit(
    t: Training,
    state: RunState,
    out_dir: Path,
    run_log: RunLog,
    stop: StopRequest,
    fault: FaultInjector | None = None,
    stop_after: int | None = None,
    resumed_from: Path | None = None,
) -> dict:
    """Train up to ``t.epochs`` (or only until epoch ``stop_after``; the schedule still spans them all).
    ``resumed_from``: the checkpoint ``state`` came from (named by an out-of-memory error before the first save).
    Returns the last evaluation's metrics ({} without one)."""
    last_path = Path(out_dir) / "last.pt"
    saved = {"path": resumed_from}  # the checkpoint that holds this run's latest saved state

    def save(name: str, payload: dict | None = None) -> None:
        if distributed.is_main():
            checkpoint.save(Path(out_dir) / name, payload or t.payload(state), keep_previous=name == "last.pt")
        if name == "last.pt":
            saved["path"] = last_path

    def after_step(state: RunState, losses: dict | None) -> bool:
        if losses is not None:
            run_log.step(state.step, losses, t.optim.lr)
        if stop.now():
            save("last.pt")
            return True
        if t.checkpoint_every and state.step % t.checkpoint_every == 0 and state.epoch_step < t.steps_per_epoch:
            save("last.pt")
        if fault is not None:
            fault(state.step)
        return False

    metrics: dict = {}
    stage = "training"  # where an out-of-memory error struck: a step, the evaluation, or the saves after it
    try:
        for epoch in range(state.epoch, min(t.epochs, stop_after or t.epochs)):
            try:
                stage = "training"
                stats = train_one_epoch(t.net, t.criterion, t.train_loader, state, t.optim, t.settings, after_step,
                                        epochs=t.epochs)  # fmt: skip
            except TrainingStopped as exc:
                raise TrainingStopped(f"{exc}; stopped, {last_path} holds the last good state") from None
            if stats is None:
                raise TrainingInterrupted(
                    f"interrupted: saved {last_path} at epoch {epoch + 1}, batch {state.epoch_step}; "
                    f"continue with --resume {last_path}"
                )
            state.end_epoch()
            if t.val_loader is not None and (
                (t.eval_every and state.epoch % t.eval_every == 0) or state.epoch == t.epochs
            ):
                stage = "evaluation"
                metrics = {}
                if distributed.is_main():
                    metrics = evaluate(t.eval_model(), t.post, t.val_loader, t.val_gt, t.labels, t.settings.device)
                distributed.barrier()
                stats.update({k: v for k, v in metrics.items() if k not in ("per_class", "precision")})
            stage = "saving"
            payload = t.payload(state)
            save("last.pt", payload)
            if metrics and metrics.get("AP", -1) > state.best_map:
                state.best_map = metrics["AP"]
                payload["best_map"] = state.best_map
                save("best.pt", payload)
            run_log.epoch(state.epoch, stats)
            distributed.barrier()
        return metrics
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        if not capacity.is_out_of_memory(exc):
            raise
    # Out of memory (outside the handler, so that the failed pass's tensors are freed). After a step, nothing is
    # saved: it may have stopped half-way through the optimiser's update. The evaluation comes after a whole
    # epoch, which is saved: the epoch's training is not lost.
    if stage == "evaluation":
        if t.settings.device.type == "cuda":
            torch.cuda.empty_cache()
        save("last.pt")
        raise OutOfMemory(evaluation_out_of_memory_message(t, state.epoch, last_path))
    during = (
        f"after epoch {state.epoch}" if stage == "saving" else f"in step {state.step + 1} (epoch {state.epoch + 1})"
    )
    raise OutOfMemory(out_of_memory_message(t, state, during, saved["path"]))
