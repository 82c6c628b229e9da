"""A tiny checkpoint for in-process unit tests: MobileNetV3-Small SSDLite at 64x64 with 3 classes."""

from __future__ import annotations

from pathlib import Path

import torch

from detector import checkpoint
from detector.build import build_model
from detector.config import Config, ModelConfig, to_dict

from ..conftest import randomise_batchnorm

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "triangle"}]


def tiny_config() -> Config:
    cfg = Config()
    cfg.model = ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=3)
    # 96 anchors at 64x64, fewer than the default topk_per_class of 100: the NMS graph must handle that too
    return cfg


def write_tiny_checkpoint(path: Path) -> Path:
    """Random weights with trained-looking BatchNorm statistics and wide class heads (spread-out scores)."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    randomise_batchnorm(model)
    for m in model.cls_heads.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.normal_(0, 0.3)
    checkpoint.save(path, {"model": model.state_dict(), "config": to_dict(cfg), "categories": CATEGORIES})
    return path
