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
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from detector import checkpoint
from detector.build import build_loss, build_model, build_postprocessor
from detector.config import Config, to_dict
from detector.data.coco_dataset import CocoDetection, collate
from detector.errors import UserError
from detector.evaluation import evaluate
from detector.predict import predict_coco
from detector.training import distributed
from detector.training.optim import build_optimizer, warmup_cosine
from detector.training.state import rng_state, set_rng_state

log = logging.getLogger(__name__)


class TrainingStopped(UserError):
    """Training cannot go on (e.g. a run of non-finite losses); the last good checkpoint is kept."""


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
        self.criterion = build_loss(cfg.loss)
        self.post = build_postprocessor(cfg.postprocess, cfg.loss)
        self.sampler = DistributedSampler(
            train_set, dist.world_size, dist.rank, shuffle=True, seed=t.seed, drop_last=True
        )
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
        self.epoch, self.step, self.best_map, self.bad_steps = 0, 0, -1.0, 0
        if resume is not None:
            self._restore(resume)

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
        set_rng_state(ckpt["rng"])
        log.info("resumed at epoch %d (step %d)", self.epoch, self.step)

    def save(self, name: str, payload: dict | None = None) -> Path:
        path = self.out_dir / name
        if self.dist.is_main:
            checkpoint.save(path, payload or self._payload())
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
            self.epoch = epoch + 1
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
                log.info(
                    "epoch %d: %s",
                    self.epoch,
                    json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in stats.items()}),
                )
            distributed.barrier()
        return metrics

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        if self.cfg.train.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        sums = torch.zeros(4, dtype=torch.float64)  # total, box, cls, steps
        images_seen, skipped, start = 0, 0, time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            disable=not self.dist.is_main,
            dynamic_ncols=True,
        )
        for images, targets in bar:
            losses = self.train_step(images, targets)
            if losses is None:
                skipped += 1
            else:
                sums += torch.tensor([losses["total"], losses["box"], losses["cls"], 1.0], dtype=torch.float64)
            images_seen += len(images) * self.dist.world_size
            rate = images_seen / (time.perf_counter() - start)
            if self.dist.is_main and losses is not None:
                bar.set_postfix(
                    loss=f"{losses['total']:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.4g}", img_s=f"{rate:.1f}"
                )
        steps = max(1.0, float(sums[3]))
        return {
            "iters": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": float(sums[0]) / steps,
            "box_loss": float(sums[1]) / steps,
            "cls_loss": float(sums[2]) / steps,
            "skipped_steps": skipped,
            "images_per_s": images_seen / (time.perf_counter() - start),
            "time_s": time.perf_counter() - start,
        }

    def train_step(self, images: torch.Tensor, targets: list[dict]) -> dict | None:
        """One SGD step; returns the losses averaged over processes, or None when the step was skipped."""
        t = self.cfg.train
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets]
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
        return {"total": total, "box": box_l, "cls": cls_l}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """COCO metrics of the evaluation weights on the validation set (main process; others wait)."""
        metrics: dict = {}
        if self.dist.is_main and self.val_set is not None:
            loader = DataLoader(self.val_set, batch_size=16, num_workers=self.cfg.data.workers, collate_fn=collate)
            ids = [c["id"] for c in self.categories]
            results = predict_coco(self.eval_model(), self.post, loader, ids, self.device)
            metrics = evaluate(self.val_set.coco, results)
            log.info("AP %.4f AP50 %.4f AP75 %.4f", metrics["AP"], metrics["AP50"], metrics["AP75"])
        distributed.barrier()
        return metrics
