"""Assembling a training run from a recipe: every object ``detector.training.loop.fit`` runs.

The model, criterion and post-processor come from ``detector.build``; here they are placed on the device (in
DDP with several processes) and joined by the loaders (the global batch split over the processes), the
optimiser, the warmup + cosine schedule per iteration, the gradient scaler, the EMA and the step settings.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from detector import build, config
from detector.config import Config, ConfigError
from detector.data.dataset import CocoDetection, collate, eval_loader
from detector.evaluation.coco_eval import load_coco
from detector.ssd.detections import LabelMap
from detector.ssd.model import SSDLite
from detector.training import capacity, distributed
from detector.training.distributed import DistInfo
from detector.training.engine import StepSettings
from detector.training.loop import Training
from detector.training.optim import Optimisation, build_optimizer, warmup_cosine
from detector.training.sampler import ResumableSampler

log = logging.getLogger(__name__)


def build_training(
    cfg: Config,
    train_set: CocoDetection,
    val_set: CocoDetection | None,
    dist: DistInfo,
    model: SSDLite | None = None,
) -> Training:
    """Every object of a training run on this process: ``model`` when given (e.g. started from other weights),
    else a fresh one of the recipe."""
    t, device = cfg.train, dist.device
    if t.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size {t.batch_size} does not split over {dist.world_size} processes")
    per_process = t.batch_size // dist.world_size
    if per_process < capacity.least_micro_batch(t.freeze_bn):
        raise ConfigError(
            f"train.batch_size {t.batch_size} over {dist.world_size} process{'es' if dist.world_size > 1 else ''} "
            "puts 1 image through each forward pass; BatchNorm needs at least 2: raise train.batch_size, or set "
            "train.freeze_bn=true"
        )
    model = model if model is not None else build.build_model(cfg.model)
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build.build_criterion(cfg.loss)
    micro = micro_batch_size(cfg, per_process, dist, model, criterion)  # probed before SyncBatchNorm: no collectives
    if t.sync_bn and dist.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if micro < per_process:
        log.info("gradient accumulation: %d forward passes of %d images per optimiser step (%d images per "
                 "process, %d in all)", per_process // micro, micro, per_process, t.batch_size)  # fmt: skip
    workers = cfg.data.workers
    if workers == "auto":
        workers = capacity.auto_workers(device.type, dist.local_world_size)
        log.info("data.workers auto: %d loader workers for this process", workers)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, t.seed, step_images=per_process)
    train_loader = DataLoader(
        train_set,
        micro,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        # Workers live for the whole run: starting them anew each epoch stalled its first step (seconds, in a
        # process holding a model, optimiser state and a dataset). The epoch reaches them through shared memory
        # (CocoDetection.set_epoch).
        persistent_workers=workers > 0,
    )
    steps_per_epoch = len(train_loader) // (per_process // micro)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{len(train_set)} training images do not fill one batch of {t.batch_size} (train.batch_size)"
        )
    if device.type == "cuda" and dist.is_main:  # so that a user sees when the loader holds the GPU up
        log.info(capacity.loader_line(train_set, workers))
    optimizer = build_optimizer(model, t.lr, t.momentum, t.weight_decay, t.backbone_lr_mult)
    schedule = warmup_cosine(t.epochs * steps_per_epoch, t.warmup_iters, t.warmup_factor, t.min_lr_ratio)
    amp = t.amp and device.type == "cuda"
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True) if t.ema else None
    net = model
    if dist.enabled:
        # A frozen backbone has no gradients for a while: DDP must then look for the parameters a step left out.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=t.freeze_backbone_epochs > 0)  # fmt: skip
    return Training(
        model=model,
        net=net,
        criterion=criterion,
        post=build.build_postprocessor(cfg, model),
        optim=Optimisation(
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
            scaler=torch.amp.GradScaler("cuda", enabled=amp),
            ema=ema,
        ),
        train_loader=train_loader,
        val_loader=eval_loader(val_set, workers=workers, persistent=True) if val_set is not None else None,
        val_gt=load_coco(val_set.ann_file) if val_set is not None and dist.is_main else None,  # scored on main
        labels=LabelMap(train_set.categories),
        settings=StepSettings(
            device=device,
            amp=amp,
            channels_last=t.channels_last,
            clip_grad_norm=t.clip_grad_norm,
            freeze_bn=t.freeze_bn,
            max_bad_steps=t.max_bad_steps,
            micro_batches=per_process // micro,
            freeze_backbone_epochs=t.freeze_backbone_epochs,
        ),
        config=recorded_config(cfg, micro),
        epochs=t.epochs,
        steps_per_epoch=steps_per_epoch,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
    )


def micro_batch_size(cfg: Config, per_process: int, dist: DistInfo, model: nn.Module, criterion: object) -> int:
    """Images per forward pass on this process: ``train.micro_batch`` resolved (0 or at least the share: the whole
    share; auto: the largest that fits the GPU, the whole share on the CPU) and checked to divide the share."""
    t, setting = cfg.train, cfg.train.micro_batch
    if setting == "auto":
        if dist.device.type != "cuda":
            return per_process
        trial = capacity.memory_trial(model, criterion, cfg.model.image_size, t.amp, t.channels_last, t.freeze_bn)
        choice = capacity.choose_on_cuda(per_process, trial, dist.device, t.freeze_bn)
        log.info(choice.line(per_process, cfg.model.image_size))
        # Every process must run as many passes per step (DDP, SyncBatchNorm): the smallest choice holds for all.
        agreed = distributed.agree_on_min(choice.micro_batch)
        if agreed != choice.micro_batch:
            log.info("train.micro_batch auto: %d, the smallest any process could take", agreed)
        return agreed
    if setting == 0 or setting >= per_process:  # e.g. 16 with a share of 8: one pass
        return per_process
    if per_process % setting:
        raise ConfigError(
            f"train.batch_size {t.batch_size} is not a multiple of train.micro_batch {setting} x {dist.world_size} "
            f"process{'es' if dist.world_size > 1 else ''} = {setting * dist.world_size}"
        )
    return setting


def recorded_config(cfg: Config, micro: int) -> dict:
    """The recipe as checkpoints carry it, with ``train.micro_batch: auto`` replaced by the size it chose: a resumed
    run then takes the same micro-batches (and so the same BatchNorm statistics) instead of probing again, which
    free memory could answer otherwise. ``--resume CKPT --set train.micro_batch=auto`` probes anew."""
    recorded = config.to_dict(cfg)
    if cfg.train.micro_batch == "auto":
        recorded["train"]["micro_batch"] = micro
    return recorded
