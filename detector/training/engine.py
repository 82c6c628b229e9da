"""The training engine: one SGD step, one epoch, one evaluation, as plain functions of explicit objects.

Per step: the step's targets matched to the anchors, the matched anchors of the whole global batch counted ->
for each micro-batch: uint8 images (n, H, W, 3) -> float input on the device -> model -> raw outputs (box codes
(n, A, 4), class logits (n, A, C + 1)) -> loss on its slice of the matches, divided by that global count ->
backward (AMP on CUDA; gradients add up) -> then optional clipping -> SGD step -> schedule -> EMA. A non-finite loss
on any process skips the step everywhere and puts BatchNorm's running statistics back to their values before
the step (``BatchNormSnapshot``); ``max_bad_steps`` in a row stop training.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from pycocotools.coco import COCO
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from detector.data.image_io import to_model_input
from detector.errors import UserError
from detector.evaluation.coco_eval import evaluate as coco_evaluate
from detector.evaluation.predict import predict_coco
from detector.inference.runner import TorchRunner
from detector.ssd.detections import LabelMap
from detector.ssd.losses import FocalLoss, HardNegativeSoftmaxLoss, matched_anchor_normalizer
from detector.ssd.postprocess import PostProcessor
from detector.training import distributed
from detector.training.optim import Optimisation
from detector.training.state import RunState

log = logging.getLogger(__name__)


class TrainingStopped(UserError):
    """Training cannot go on (a run of non-finite losses); the last good checkpoint is kept."""


@dataclass(frozen=True)
class StepSettings:
    """How a step runs: where, in which precision and layout, with which clipping and non-finite policy."""

    device: torch.device = torch.device("cpu")
    amp: bool = False  # float16 autocast + gradient scaling (CUDA only)
    channels_last: bool = False
    clip_grad_norm: float = 0.0  # 0: off
    freeze_bn: bool = False  # BatchNorm layers stay in inference mode
    max_bad_steps: int = 20  # non-finite losses in a row before training stops
    micro_batches: int = 1  # forward passes (loader batches) per optimiser step: gradient accumulation
    freeze_backbone_epochs: int = 0  # epochs 0..N-1 leave the backbone (weights and BatchNorm) as it is


def batchnorm_to_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in inference mode (running statistics, no updates)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze or thaw ``model.backbone``: no gradients for its parameters (SGD then leaves them, their momentum
    and their weight decay alone) and, when frozen, its BatchNorm layers in inference mode. Call after
    ``model.train()``."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        batchnorm_to_eval(model.backbone)


def _bn_statistics(model: nn.Module) -> list[torch.Tensor]:
    return [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]


class BatchNormSnapshot:
    """BatchNorm's running statistics as they were before the current step, so that a batch whose loss is not
    finite leaves no trace in them. The copies are allocated once and refreshed by one fused copy per step
    (``torch._foreach_copy_``: one kernel for all layers, no allocation)."""

    def __init__(self, model: nn.Module) -> None:
        self.live = _bn_statistics(model)
        self.saved = [b.clone() for b in self.live]

    def take(self) -> None:
        if self.live:
            torch._foreach_copy_(self.saved, self.live)

    def restore(self) -> None:
        if self.live:
            torch._foreach_copy_(self.live, self.saved)


MicroBatch = tuple[torch.Tensor, list[dict]]  # images (n, H, W, 3) uint8 and their targets, as the loader gives


def train_step(
    model: nn.Module,
    criterion: FocalLoss | HardNegativeSoftmaxLoss,
    batch: Sequence[MicroBatch],
    optim: Optimisation,
    settings: StepSettings,
) -> dict | None:
    """One SGD step on this process's share of the global batch, given as micro-batches (one forward and
    backward pass each; their gradients add up). Images (n, H, W, 3) uint8, targets as ``CocoDetection`` gives
    them (boxes (M, 4) float32 xyxy input pixels, labels (M,) int64 1..C, crowd_boxes (G, 4)). ``model`` may be
    wrapped in DistributedDataParallel: gradients are then exchanged once, on the last micro-batch.

    The whole step's targets are matched first and the loss is divided by the matched anchors of the global
    batch (all micro-batches, all processes), so any split into micro-batches and processes computes the
    gradient of the whole batch. Returns the losses averaged over processes ({"total", "box", "cls"} floats), or
    None when a non-finite loss on any process skipped the step (BatchNorm's running statistics then hold that
    batch's update: ``train_one_epoch`` puts them back with a ``BatchNormSnapshot``)."""
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    net = model.module if ddp else model
    targets = [{k: (v.to(settings.device) if torch.is_tensor(v) else v) for k, v in t.items()}
               for _, micro in batch for t in micro]  # fmt: skip
    with torch.no_grad():
        labels, codes = criterion.match(targets, net.anchors)
    normalizer = matched_anchor_normalizer(labels)  # the global batch's matched anchors / processes
    optim.optimizer.zero_grad(set_to_none=True)
    sums, first = torch.zeros(3, dtype=torch.float64, device=settings.device), 0
    for i, (images, _) in enumerate(batch):
        x = to_model_input(images, settings.device)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        rows = slice(first, first + len(images))
        first += len(images)
        # DDP exchanges gradients on the backward of the last micro-batch only.
        with model.no_sync() if ddp and i < len(batch) - 1 else contextlib.nullcontext():
            with torch.autocast("cuda", dtype=torch.float16, enabled=settings.amp):
                box, logits = model(x)
            losses = criterion.compute(box.float(), logits.float(), labels[rows], codes[rows], normalizer)
            optim.scaler.scale(losses["total"]).backward()
        sums += torch.stack([losses["total"], losses["box"], losses["cls"]]).detach().double()
    # One exchange: the non-finite count and the loss sums of every process.
    reduced = distributed.all_reduce_sum(torch.cat([(~torch.isfinite(sums[:1])).double(), sums]))
    if reduced[0].item() > 0:
        optim.optimizer.zero_grad(set_to_none=True)
        return None
    if settings.clip_grad_norm > 0:
        optim.scaler.unscale_(optim.optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), settings.clip_grad_norm)
    optim.scaler.step(optim.optimizer)
    optim.scaler.update()
    optim.scheduler.step()
    if optim.ema is not None:
        optim.ema.update_parameters(net)
    total, box_loss, cls_loss = (reduced[1:] / distributed.world_size()).tolist()  # = one process's, whole batch
    return {"total": total, "box": box_loss, "cls": cls_loss}


def steps_in(loader: DataLoader, micro_batches: int) -> Iterator[list[MicroBatch]]:
    """The loader's micro-batches, ``micro_batches`` at a time: one optimiser step's worth each."""
    step: list[MicroBatch] = []
    for micro in loader:
        step.append(micro)
        if len(step) == micro_batches:
            yield step
            step = []


def train_one_epoch(
    model: nn.Module,
    criterion: FocalLoss | HardNegativeSoftmaxLoss,
    loader: DataLoader,
    state: RunState,
    optim: Optimisation,
    settings: StepSettings,
    after_step: Callable[[RunState, dict | None], bool] = lambda state, losses: False,
    epochs: int | None = None,
) -> dict | None:
    """Epoch ``state.epoch`` from optimiser step ``state.epoch_step`` on (the rest of it after a mid-epoch
    resume). The loader gives micro-batches; ``settings.micro_batches`` of them make one step.
    ``after_step(state, losses)`` runs after every step (logging, checkpoints, stop requests); True stops the
    epoch there. Returns the epoch's statistics, or None when stopped."""
    model.train()
    if settings.freeze_bn:
        batchnorm_to_eval(model)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if settings.freeze_backbone_epochs:
        set_backbone_frozen(net, state.epoch < settings.freeze_backbone_epochs)
    batchnorm = BatchNormSnapshot(net)
    loader.sampler.set_epoch(state.epoch)
    loader.sampler.skip = state.epoch_step * settings.micro_batches * loader.batch_size
    loader.dataset.set_epoch(state.epoch)
    world, images_before, start = distributed.world_size(), state.sums.images, time.perf_counter()
    bar = tqdm(steps_in(loader, settings.micro_batches), desc=f"epoch {state.epoch + 1}/{epochs or '?'}",
               disable=not distributed.is_main(), initial=state.epoch_step,
               total=len(loader) // settings.micro_batches, dynamic_ncols=True)  # fmt: skip
    for batch in bar:
        batchnorm.take()
        losses = train_step(model, criterion, batch, optim, settings)
        state.epoch_step += 1
        state.sums.add(losses, sum(len(images) for images, _ in batch) * world)
        if losses is None:
            state.bad_steps += 1
            log.warning("non-finite loss at step %d, step skipped; image ids of this batch: %s", state.step,
                        [t["image_id"] for _, targets in batch for t in targets])  # fmt: skip
            batchnorm.restore()
            if state.bad_steps >= settings.max_bad_steps:
                raise TrainingStopped(f"{state.bad_steps} non-finite losses in a row at step {state.step}")
        else:
            state.bad_steps, state.step = 0, state.step + 1
            rate = (state.sums.images - images_before) / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{losses['total']:.4f}", lr=f"{optim.lr:.4g}", img_s=f"{rate:.1f}")
        if after_step(state, losses):
            bar.close()
            return None
    sums, elapsed = state.sums, time.perf_counter() - start
    steps = max(1, sums.steps)
    return {
        "iters": state.step,
        "lr": optim.lr,
        "loss": sums.loss / steps,
        "box_loss": sums.box_loss / steps,
        "cls_loss": sums.cls_loss / steps,
        "skipped_steps": sums.skipped,
        "images_per_s": (sums.images - images_before) / elapsed,
        "time_s": elapsed,
    }


def evaluate(
    model: nn.Module, post: PostProcessor, loader: DataLoader, gt: COCO, labels: LabelMap, device: torch.device
) -> dict:
    """COCO metrics of ``model`` on ``loader`` (a plain-resize ``CocoDetection`` loader) against ``gt``:
    {"AP", "AP50", ..., "per_class", "precision"} as ``detector.evaluation.coco_eval.evaluate`` gives them.
    The model is evaluated in eval mode, then put back in the mode it was in."""
    was_training = model.training
    try:
        runner = TorchRunner(model, post, labels.categories, str(device))
        metrics = coco_evaluate(gt, predict_coco(runner, loader))
    finally:
        model.train(was_training)
    log.info("AP %.4f AP50 %.4f AP75 %.4f", metrics["AP"], metrics["AP50"], metrics["AP75"])
    return metrics
