"""Assembling a training run from a recipe: every object ``detector.training.loop.fit`` runs.

The model, criterion and post-processor come from ``detector.build``; here they are placed on the device (in
DDP with several processes) and joined by the loaders (the global batch split over the processes), the
optimiser, the warmup + cosine schedule per iteration, the gradient scaler, the EMA and the step settings.
"""

from __future__ import annotations

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
from detector.training.distributed import DistInfo
from detector.training.engine import StepSettings
from detector.training.loop import Training
from detector.training.optim import Optimisation, build_optimizer, warmup_cosine
from detector.training.sampler import ResumableSampler


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
    model = model if model is not None else build.build_model(cfg.model)
    if t.sync_bn and dist.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, t.seed)
    train_loader = DataLoader(
        train_set,
        t.batch_size // dist.world_size,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.data.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        # Workers live for the whole run: starting them anew each epoch stalled its first step (seconds, in a
        # process holding a model, optimiser state and a dataset). The epoch reaches them through shared memory
        # (CocoDetection.set_epoch).
        persistent_workers=cfg.data.workers > 0,
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"{len(train_set)} training images do not fill one batch of {t.batch_size} (train.batch_size)"
        )
    optimizer = build_optimizer(model, t.lr, t.momentum, t.weight_decay, t.backbone_lr_mult)
    schedule = warmup_cosine(t.epochs * len(train_loader), t.warmup_iters, t.warmup_factor, t.min_lr_ratio)
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
        criterion=build.build_criterion(cfg.loss),
        post=build.build_postprocessor(cfg, model),
        optim=Optimisation(
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
            scaler=torch.amp.GradScaler("cuda", enabled=amp),
            ema=ema,
        ),
        train_loader=train_loader,
        val_loader=eval_loader(val_set, workers=cfg.data.workers, persistent=True) if val_set is not None else None,
        val_gt=load_coco(val_set.ann_file) if val_set is not None and dist.is_main else None,  # scored on main
        labels=LabelMap(train_set.categories),
        settings=StepSettings(
            device=device,
            amp=amp,
            channels_last=t.channels_last,
            clip_grad_norm=t.clip_grad_norm,
            freeze_bn=t.freeze_bn,
            max_bad_steps=t.max_bad_steps,
            freeze_backbone_epochs=t.freeze_backbone_epochs,
        ),
        config=config.to_dict(cfg),
        epochs=t.epochs,
        eval_every=t.eval_every,
        checkpoint_every=t.checkpoint_every,
    )
