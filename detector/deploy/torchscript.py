"""TorchScript export of the raw graph (the same outputs as the raw ONNX graph), for C++/LibTorch runtimes.

``images`` (N, 3, H, W) float32 in [0, 1] -> (``boxes`` (N, A, 4) xyxy input pixels, ``scores`` (N, A, C)).
The metadata of ``detector.deploy.onnx_export.metadata`` travels as the extra file ``detector.json``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from detector.deploy.fuse import fuse_for_inference
from detector.deploy.onnx_export import RawOutputs
from detector.ssd.postprocess import PostProcessor

EXTRA_FILE = "detector.json"


def export_torchscript(model: nn.Module, post: PostProcessor, path: str | Path, props: dict[str, str]) -> None:
    """Trace the BatchNorm-folded raw graph and save it with ``props`` as ``detector.json``."""
    wrapper = RawOutputs(fuse_for_inference(model), post).eval()
    example = torch.rand(1, 3, *model.image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the constant input size; deprecation
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(props)})


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """The traced module and its metadata."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, but LibTorch still loads it
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE])
