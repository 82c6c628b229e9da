"""Starting a model from other weights: every tensor whose name and shape match, class rows by category name.

Class predictors: ``cls_heads.<level>.1`` is a 1x1 conv whose output channel ``a * K + k`` scores class slot k
(0: background, k: category k - 1) of anchor a at that level, K = num_classes + 1. When the source's
categories differ from the model's, these rows are rearranged by category name: a class in both keeps its
exact weight and bias rows, a new class keeps the model's fresh rows, a class only in the source is dropped;
the background row and the box predictors are kept as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from detector.backbones.mobilenet_v3 import torchvision_key_map
from detector.checkpoint import rename_by_prefix

CLASS_ROWS = re.compile(r"cls_heads\.\d+\.1\.(weight|bias)$")


def _key(name: str) -> str:
    """Names match case-insensitively, ignoring surrounding and repeated spaces ("Traffic  light" = "traffic light")."""
    return " ".join(name.split()).casefold()


@dataclass
class InitSummary:
    """What an initialisation did, for its one log message."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # in both, shapes differ: the model's init is kept
    skipped: list[str] = field(default_factory=list)  # in the source only
    missing: list[str] = field(default_factory=list)  # in the model only: kept at initialisation
    carried: list[str] = field(default_factory=list)  # class names whose rows came from the source
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)  # names the source has more than once (not carried)

    def message(self) -> str:
        def some(items: list[str], n: int = 3) -> str:
            return f" ({', '.join(items[:n])}{', ...' if len(items) > n else ''})" if items else ""

        text = (
            f"init from {self.source}: {len(self.loaded)} tensors loaded, {len(self.reinitialised)} re-initialised "
            f"(shape differs){some(self.reinitialised)}, {len(self.skipped)} skipped (not in this model)"
            f"{some(self.skipped)}, {len(self.missing)} not in the source (kept at initialisation){some(self.missing)}"
        )
        if self.carried or self.new or self.dropped:
            text += (
                f"; classes: {len(self.carried)} carried over by name{some(self.carried, 8)}, {len(self.new)} new"
                f"{some(self.new, 8)}, {len(self.dropped)} dropped{some(self.dropped, 8)}"
            )
        if self.ambiguous:
            text += f"; not carried, named more than once in the source: {', '.join(sorted(set(self.ambiguous)))}"
        return text


def carry_class_rows(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    source_names: list[str],
    names: list[str],
    summary: InitSummary,
) -> dict[str, torch.Tensor]:
    """``source`` with its class-predictor rows rearranged for the classes ``names`` of ``target`` (the model's
    freshly initialised state, which gives the rows of new classes); the classes carried over, new, dropped
    and ambiguous go into ``summary``. Levels whose anchor count or input channels differ are left alone (the
    shape rule then re-initialises them)."""
    counts: dict[str, int] = {}
    for n in source_names:
        counts[_key(n)] = counts.get(_key(n), 0) + 1
    index = {_key(n): i for i, n in enumerate(source_names) if counts[_key(n)] == 1}
    wanted = {_key(n) for n in names}
    summary.carried = [n for n in names if _key(n) in index]
    summary.new = [n for n in names if _key(n) not in index]
    summary.dropped = [n for n in source_names if counts[_key(n)] == 1 and _key(n) not in wanted]
    summary.ambiguous = [n for n in source_names if counts[_key(n)] > 1 and _key(n) in wanted]
    k_src, k_dst = len(source_names) + 1, len(names) + 1
    out = dict(source)
    for key, src in source.items():
        dst = target.get(key)
        if not CLASS_ROWS.search(key) or dst is None or src.shape[0] % k_src or dst.shape[0] % k_dst:
            continue
        anchors = src.shape[0] // k_src
        if anchors != dst.shape[0] // k_dst or src.shape[1:] != dst.shape[1:]:
            continue
        rows_src = src.reshape(anchors, k_src, *src.shape[1:])
        rows = dst.reshape(anchors, k_dst, *dst.shape[1:]).clone()
        rows[:, 0] = rows_src[:, 0]  # background
        for j, name in enumerate(names, start=1):
            if _key(name) in index:
                rows[:, j] = rows_src[:, index[_key(name)] + 1]
        out[key] = rows.reshape(dst.shape)
    return out


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], summary: InitSummary) -> InitSummary:
    """Copy into ``model`` every tensor of ``state`` whose name and shape match; record the rest in ``summary``."""
    own = model.state_dict()
    merged = dict(own)
    for key, value in state.items():
        if key not in own:
            summary.skipped.append(key)
        elif own[key].shape != value.shape:
            summary.reinitialised.append(key)
        else:
            merged[key] = value.to(own[key].dtype)
            summary.loaded.append(key)
    summary.missing = [k for k in own if k not in state]
    model.load_state_dict(merged)
    return summary


def imagenet_backbone_state(classifier_state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """A torchvision ``mobilenet_v3_*`` classifier state dict under our detector's names (``backbone.…``);
    tensors with no counterpart in a detector (the classifier) keep their torchvision names."""
    mapping = {tv: "backbone." + ours for tv, ours in torchvision_key_map(backbone).items()
               if not tv.startswith("classifier.")}  # fmt: skip
    renamed, unmatched = rename_by_prefix(classifier_state, mapping)
    return {**renamed, **{key: classifier_state[key] for key in unmatched}}
