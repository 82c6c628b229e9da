"""The training loop: one object that owns model, optimiser, schedule, EMA, data and checkpoints.

Per iteration: uint8 batch -> float [0, 1] on the device -> model -> matched targets -> loss normalised by
the global number of matched anchors -> backward (AMP on CUDA) -> optional clipping -> SGD step -> schedule
-> EMA. A non-finite loss skips the step (the batch's image ids are logged); ``max_bad_steps`` in a row stop
training, keeping the last good checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from detector import checkpoint
from detector.build import build_criterion, build_model, build_postprocessor
from detector.config import Config, to_dict
from detector.data.dataset import CocoDetection, collate
from detector.data.image_io import to_model_input
from detector.errors import UserError
from detector.evaluation.coco_eval import evaluate, load_coco
from detector.evaluation.predict import predict_coco
from detector.ssd.detections import LabelMap
from detector.training import distributed
from detector.training.optim import build_optimizer, warmup_cosine
from detector.training.sampler import ResumableSampler
from detector.training.state import rng_state, set_rng_state

log = logging.getLogger(__name__)


class TrainingStopped(UserError):
    """Training cannot go on (e.g. a run of non-finite losses); the last good checkpoint is kept."""


class TrainingInterrupted(UserError):
    """SIGINT or SIGTERM: a checkpoint was saved at the next safe point."""


def _tensorboard(folder: Path):
    """A SummaryWriter when tensorboard is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def inject_fault(step: int, rank: int) -> None:
    """Fault injection for the reliability tests: with DETECTOR_FAULT_AT_STEP=N the process of rank
    DETECTOR_FAULT_RANK (default 1) dies at step N, on torchrun's first attempt only."""
    at = os.environ.get("DETECTOR_FAULT_AT_STEP")
    if at is None or step != int(at) or rank != int(os.environ.get("DETECTOR_FAULT_RANK", "1")):
        return
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        log.error("injected fault: rank %d exits at step %d", rank, step)
        os._exit(17)


class Trainer:
    def __init__(
        self,
        cfg: Config,
        out_dir: Path,
        dist: distributed.DistInfo,
        train_set: CocoDetection,
        val_set: CocoDetection | None,
        resume: dict | None = None,
    ) -> None:
        self.cfg, self.out_dir, self.dist = cfg, Path(out_dir), dist
        t = cfg.train
        if t.batch_size % dist.world_size:
            raise UserError(f"train.batch_size {t.batch_size} does not split over {dist.world_size} processes")
        self.local_batch = t.batch_size // dist.world_size
        self.train_set, self.val_set = train_set, val_set
        self.categories = train_set.categories
        self.device = dist.device
        model = build_model(cfg.model)
        if t.sync_bn and dist.enabled and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = build_criterion(cfg.loss)
        self.post = build_postprocessor(cfg, self.model.anchors)
        self.sampler = ResumableSampler(train_set, dist.world_size, dist.rank, t.seed)
        self.loader = DataLoader(
            train_set,
            self.local_batch,
            sampler=self.sampler,
            num_workers=cfg.data.workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
        )
        self.iters_per_epoch = len(self.loader)
        if self.iters_per_epoch == 0:
            raise UserError(f"{len(train_set)} training images do not fill one batch of {t.batch_size}")
        self.optimizer = build_optimizer(self.model, t.lr, t.momentum, t.weight_decay)
        schedule = warmup_cosine(t.epochs * self.iters_per_epoch, t.warmup_iters, t.warmup_factor, t.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.use_amp = t.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
            if t.ema
            else None
        )
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if dist.enabled
            else self.model
        )
        self.bn_buffers = [
            b for name, b in self.model.named_buffers() if name.endswith(("running_mean", "running_var"))
        ]
        self.epoch, self.step, self.best_map, self.bad_steps = 0, 0, -1.0, 0
        self.epoch_step = 0  # batches done in the current epoch (non-zero only in mid-epoch checkpoints)
        self.epoch_sums = torch.zeros(6, dtype=torch.float64)  # total, box, cls, steps, skipped, images
        self.stop_requested = False  # set from a signal handler; acted on after the current step
        self.tb = _tensorboard(self.out_dir / "tb") if dist.is_main else None
        if resume is not None:
            self._restore(resume)
        elif dist.is_main:
            (self.out_dir / "log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log

    # ---------------------------------------------------------------- checkpoints
    def _payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "config": to_dict(self.cfg),
            "categories": self.categories,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "epoch_sums": self.epoch_sums.clone(),
            "step": self.step,
            "best_map": self.best_map,
            "rng": rng_state(),
        }

    def _restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.step, self.best_map = ckpt["epoch"], ckpt["step"], ckpt["best_map"]
        self.epoch_step = ckpt.get("epoch_step", 0)
        self.epoch_sums = ckpt.get("epoch_sums", torch.zeros(6, dtype=torch.float64)).clone()
        set_rng_state(ckpt["rng"])
        log.info("resumed at epoch %d, batch %d (step %d)", self.epoch + 1, self.epoch_step, self.step)

    def save(self, name: str, payload: dict | None = None) -> Path:
        """Main process writes DIR/name atomically; last.pt keeps its predecessor as last.prev.pt."""
        path = self.out_dir / name
        if self.dist.is_main:
            checkpoint.save(path, payload or self._payload(), keep_previous=name == "last.pt")
        return path

    def eval_model(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    # ---------------------------------------------------------------- loop
    def fit(self, stop_after: int | None = None) -> dict:
        """Train up to ``train.epochs`` (or only until epoch ``stop_after``; the schedule still spans them all)."""
        t = self.cfg.train
        metrics: dict = {}
        for epoch in range(self.epoch, min(t.epochs, stop_after or t.epochs)):
            stats = self.train_epoch(epoch)
            if stats is None:  # interrupted: a mid-epoch checkpoint was saved
                raise TrainingInterrupted(
                    f"interrupted: saved {self.out_dir / 'last.pt'} at epoch {epoch + 1}, batch {self.epoch_step}; "
                    f"continue with --resume {self.out_dir / 'last.pt'}"
                )
            self.epoch, self.epoch_step = epoch + 1, 0
            self.epoch_sums.zero_()
            last = self.epoch == t.epochs
            if self.val_set is not None and ((t.eval_every and self.epoch % t.eval_every == 0) or last):
                metrics = self.evaluate()
                stats.update({k: v for k, v in metrics.items() if k not in ("per_class", "precision")})
            payload = self._payload()
            self.save("last.pt", payload)
            if metrics and metrics.get("AP", -1) > self.best_map:
                self.best_map = metrics["AP"]
                payload["best_map"] = self.best_map
                self.save("best.pt", payload)
            if self.dist.is_main:
                with open(self.out_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps({"epoch": self.epoch, **stats}) + "\n")
                if self.tb is not None:
                    for key, value in stats.items():
                        self.tb.add_scalar(f"epoch/{key}", value, self.epoch)
                    self.tb.flush()
                log.info(
                    "epoch %d: %s",
                    self.epoch,
                    json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in stats.items()}),
                )
            distributed.barrier()
        return metrics

    def train_epoch(self, epoch: int) -> dict | None:
        """One epoch (or its rest, after a mid-epoch resume); None when interrupted by a signal."""
        t = self.cfg.train
        self.model.train()
        if t.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.sampler.set_epoch(epoch)
        self.sampler.skip = self.epoch_step * self.local_batch
        self.train_set.set_epoch(epoch)
        start = time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=not self.dist.is_main,
            initial=self.epoch_step,
            total=self.iters_per_epoch,
            dynamic_ncols=True,
        )
        images_before = float(self.epoch_sums[5])
        for images, targets in bar:
            losses = self.train_step(images, targets)
            self.epoch_step += 1
            row = (
                [0.0, 0.0, 0.0, 0.0, 1.0]
                if losses is None
                else [losses["total"], losses["box"], losses["cls"], 1.0, 0.0]
            )
            self.epoch_sums += torch.tensor([*row, len(images) * self.dist.world_size], dtype=torch.float64)
            rate = (float(self.epoch_sums[5]) - images_before) / (time.perf_counter() - start)
            if self.dist.is_main and losses is not None:
                bar.set_postfix(
                    loss=f"{losses['total']:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.4g}", img_s=f"{rate:.1f}"
                )
            if self._stop_now():
                bar.close()
                self.save("last.pt")
                return None
            if t.checkpoint_every and self.step % t.checkpoint_every == 0 and self.epoch_step < self.iters_per_epoch:
                self.save("last.pt")
            inject_fault(self.step, self.dist.rank)
        total, box, cls, steps, skipped, images = self.epoch_sums.tolist()
        steps = max(1.0, steps)
        elapsed = time.perf_counter() - start
        return {
            "iters": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": total / steps,
            "box_loss": box / steps,
            "cls_loss": cls / steps,
            "skipped_steps": int(skipped),
            "images_per_s": (images - images_before) / elapsed,
            "time_s": elapsed,
        }

    def _stop_now(self) -> bool:
        """Whether any process was asked to stop (all processes agree, so they stop at the same step)."""
        flag = torch.tensor([1.0 if self.stop_requested else 0.0], dtype=torch.float64)
        return distributed.all_reduce_sum(flag).item() > 0 if self.dist.enabled else self.stop_requested

    def train_step(self, images: torch.Tensor, targets: list[dict]) -> dict | None:
        """One SGD step; returns the losses averaged over processes, or None when the step was skipped."""
        t = self.cfg.train
        x = to_model_input(images, self.device)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets]
        # A bad batch must not poison BatchNorm's running statistics either: keep them to restore on a skip.
        bn_buffers = [b.clone() for b in self.bn_buffers]
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            box, logits = self.ddp(x)
        labels, codes = self.criterion.match(targets, self.model.anchors)
        # Normalise by the global count of matched anchors, so N processes compute what one would.
        num_pos = distributed.all_reduce_sum((labels > 0).sum().double()).item()
        normalizer = max(1.0, num_pos) / self.dist.world_size
        losses = self.criterion.compute(box.float(), logits.float(), labels, codes, normalizer)
        finite = distributed.all_reduce_sum(torch.isfinite(losses["total"]).double().reshape(1)).item()
        self.optimizer.zero_grad(set_to_none=True)
        if finite < self.dist.world_size:
            for buffer, saved in zip(self.bn_buffers, bn_buffers):
                buffer.copy_(saved)
            self.bad_steps += 1
            ids = [tg["image_id"] for tg in targets]
            log.warning("non-finite loss at step %d, step skipped; image ids of this batch: %s", self.step, ids)
            if self.bad_steps >= t.max_bad_steps:
                raise TrainingStopped(
                    f"{self.bad_steps} non-finite losses in a row at step {self.step}; "
                    f"stopped, {self.out_dir / 'last.pt'} holds the last good state"
                )
            return None
        self.bad_steps = 0
        self.scaler.scale(losses["total"]).backward()
        if t.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        reduced = distributed.all_reduce_sum(torch.stack([losses["total"], losses["box"], losses["cls"]]).detach())
        total, box_l, cls_l = (reduced / self.dist.world_size).tolist()  # = what one process would compute
        if not all(math.isfinite(v) for v in (total, box_l, cls_l)):
            return None
        if self.tb is not None and self.step % t.log_every == 0:
            for key, value in (("loss", total), ("box_loss", box_l), ("cls_loss", cls_l)):
                self.tb.add_scalar(f"train/{key}", value, self.step)
            self.tb.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
        return {"total": total, "box": box_l, "cls": cls_l}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """COCO metrics of the evaluation weights on the validation set (main process; others wait)."""
        metrics: dict = {}
        if self.dist.is_main and self.val_set is not None:
            loader = DataLoader(self.val_set, batch_size=16, num_workers=self.cfg.data.workers, collate_fn=collate)
            results = predict_coco(self.eval_model(), self.post, loader, LabelMap(self.categories), self.device)
            metrics = evaluate(load_coco(self.val_set.ann_file), results)
            log.info("AP %.4f AP50 %.4f AP75 %.4f", metrics["AP"], metrics["AP50"], metrics["AP75"])
        distributed.barrier()
        return metrics
