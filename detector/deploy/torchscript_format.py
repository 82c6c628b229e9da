"""TorchScript files of ours, for C++/LibTorch runtimes: the raw graph traced (any batch size), its metadata
(``detector.deploy.exported.metadata``) as the extra file ``detector.json``; the writer and a runner."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from detector.deploy.exported import ExportedRunner, check_format
from detector.deploy.formats import ExportJob, Format
from detector.errors import UserError

EXTRA_FILE = "detector.json"


class TorchScriptRunner(ExportedRunner):
    """A TorchScript file of ours, in PyTorch on the CPU (see ``Runner`` for the call)."""

    runtime = "torchscript"

    def __init__(self, path: str | Path) -> None:
        extra = {EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; LibTorch still loads it
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
            props = json.loads(extra[EXTRA_FILE] or "{}")
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"{path}: not a TorchScript file of ours: {str(exc).splitlines()[0][:200]}") from None
        super().__init__(path, check_format(props, path), None)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return [t.numpy() for t in self.module(torch.from_numpy(batch))]


class TorchScriptFormat(Format):
    name, title, suffix = "torchscript", "TorchScript", ".torchscript.pt"
    batch = "dynamic"

    def write(self, job: ExportJob, path: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about the constant input size; deprecation
            traced = torch.jit.trace(job.folded_graph(), (job.example_input(),), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(job.props("raw", "fp32"))})

    def open(self, path: Path, precision: str = "f32") -> TorchScriptRunner:
        return TorchScriptRunner(path)
