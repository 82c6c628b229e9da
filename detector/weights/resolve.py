"""A weights SPEC (a name of the catalog, or a checkpoint file) -> a ``LoadedModel``, or the start of a
training run. ``load_model`` is the one way to get a trained model: detection, evaluation, export, the
benchmarks and the Python API (``detector.load``) all go through it.

Names win over files: ``torchvision-coco`` is the catalog entry even when a file of that name exists here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from detector import build, checkpoint, config
from detector.build import LoadedModel
from detector.errors import UserError
from detector.weights import hub
from detector.weights.catalog import NamedWeights, lookup, names
from detector.weights.tf_graph import graph_checkpoint
from detector.weights.torchvision_ssdlite import TORCHVISION_CONFIG, coco_categories, convert_state_dict
from detector.weights.transfer import InitSummary, carry_class_rows, imagenet_backbone_state, load_matching

log = logging.getLogger(__name__)


def _unknown(spec: str) -> UserError:
    return UserError(f"{spec}: no such file, and not a name of known weights ({', '.join(names())})")


def _state_dict(entry: NamedWeights) -> dict:
    state = checkpoint.load_state_file(hub.fetch(entry))
    if not isinstance(state, dict) or not state:
        raise UserError(f"{hub.cached_path(entry)}: not a state dict")
    return state


def torchvision_checkpoint(state: dict, source: str) -> dict:
    """A checkpoint of ours (contents) from torchvision's ``ssdlite320_mobilenet_v3_large`` state dict."""
    model = build.build_model(TORCHVISION_CONFIG.model, init=False)
    return {
        "model": convert_state_dict(state, model),
        "config": config.to_dict(TORCHVISION_CONFIG),
        "categories": coco_categories(),
        "source": source,
    }


def resolve_checkpoint(spec: str | Path) -> dict:
    """The checkpoint contents (``model``, ``config``, ``categories``) of a detector name or checkpoint file."""
    entry = lookup(str(spec))
    if entry is None:
        if not Path(spec).exists():
            raise _unknown(str(spec))
        return checkpoint.load(spec)
    if entry.kind == "torchvision-classifier":
        raise UserError(
            f"{entry.name} is an ImageNet classifier, not a detector: start training from it with "
            f"tools/train_coco.py --init {entry.name}"
        )
    if entry.kind == "torchvision-ssdlite":
        return torchvision_checkpoint(_state_dict(entry), f"{entry.name} ({entry.url})")
    if entry.kind == "tf-frozen-graph":
        path = hub.fetch(entry)
        converted = graph_checkpoint(path, f"{entry.name} ({entry.url})")
        hub.remember_first_use(entry, path)  # trust on first use where the publisher gives no hash
        return converted
    return checkpoint.load(hub.fetch(entry))


def describe(spec: str | Path) -> str:
    entry = lookup(str(spec))
    return f"{entry.name}: {entry.description}" if entry else str(spec)


def load_model(spec: str | Path) -> LoadedModel:
    """The model, post-processor, categories and recipe of a name of the catalog or a checkpoint file."""
    return build.model_from_checkpoint(resolve_checkpoint(spec), describe(spec))


def initialise(model: nn.Module, spec: str, backbone: str, categories: list[dict]) -> InitSummary:
    """Start ``model`` (freshly initialised, for ``categories`` of the training set, ``backbone`` its
    model.backbone) from ``spec``: an ImageNet classifier name loads the backbone; a detector (name or
    checkpoint) loads every tensor whose name and shape match, class rows carried over by category name.
    Returns what was done; an init that loads nothing is an error."""
    entry = lookup(spec)
    if entry is not None and entry.kind == "torchvision-classifier":
        if backbone != entry.backbone:
            raise UserError(f"--init {spec}: these are {entry.backbone} weights; model.backbone is {backbone}")
        state = imagenet_backbone_state(_state_dict(entry), model.backbone)
        summary = load_matching(model, state, InitSummary(f"{spec} (backbone)"))
    else:
        source, summary = resolve_checkpoint(spec), InitSummary(str(spec))
        source_names = [c["name"] for c in source["categories"]]
        target_names = [c["name"] for c in categories]
        state = checkpoint.shipped_weights(source)
        if source_names != target_names:
            state = carry_class_rows(state, model.state_dict(), source_names, target_names, summary)
        load_matching(model, state, summary)
    own = model.state_dict()
    if not any(own[k].ndim == 4 for k in summary.loaded):  # only coincidences (BatchNorm, biases) would load
        raise UserError(f"--init {spec}: no convolution of it fits this model ({summary.message()})")
    if len(summary.reinitialised) > len(summary.loaded):
        log.warning("--init %s: most tensors it shares with this model have other shapes: another architecture?", spec)
    return summary
