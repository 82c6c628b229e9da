"""ExecuTorch with the XNNPACK delegate (``pip install '.[executorch]'``, imported on first use): the kernel
library of the mobile runtimes the paper measured its latencies with. A writer and a runner of ``.pte`` files.

A ``.pte`` program holds the raw graph (batch 1), BatchNorm folded, lowered to XNNPACK: fp32, or int8 by
PyTorch's PT2E post-training quantisation (XNNPACK's symmetric per-channel scheme, calibrated on images). Our
metadata (``detector.deploy.exported.metadata``) is the program's constant method ``detector_metadata``
(UTF-8 JSON as a uint8 tensor), so the file alone suffices.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from detector.deploy.exported import ExportedRunner, check_format
from detector.deploy.formats import ExportJob, Format
from detector.errors import UserError

METADATA_METHOD = "detector_metadata"


def executorch_runtime():
    """ExecuTorch's runtime module (``pip install '.[executorch]'``)."""
    try:
        from executorch import runtime
    except ImportError:
        raise UserError("the executorch runtime needs ExecuTorch: pip install '.[executorch]'") from None
    return runtime


class ExecuTorchRunner(ExportedRunner):
    """A ``.pte`` of ours on ExecuTorch's XNNPACK delegate (see ``Runner`` for the call)."""

    runtime = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        runtime = executorch_runtime()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            program = runtime.Runtime.get().load_program(str(path))
        except Exception as exc:  # noqa: BLE001 - ExecuTorch raises RuntimeError and its own types
            raise UserError(f"{path}: ExecuTorch cannot load it: {str(exc).splitlines()[0][:200]}") from None
        if METADATA_METHOD not in program.method_names:
            raise UserError(f"{path}: not exported by tools/export.py (no {METADATA_METHOD} method)")
        raw = program.load_method(METADATA_METHOD).execute([])[0]
        props = check_format(json.loads(bytes(raw.tolist()).decode()), path)
        try:  # XNNPACK's thread pool (default: 2 threads); the API is marked experimental
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads or os.cpu_count() or 1)
        except (ImportError, AttributeError):
            pass
        self.method = program.load_method("forward")
        super().__init__(path, props, 1)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return [o.numpy() for o in self.method.execute([torch.from_numpy(batch)])]


def _lower(program: torch.export.ExportedProgram, props: dict[str, str], out: Path) -> None:
    executorch_runtime()  # the one-line error when ExecuTorch is not installed
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    meta = torch.tensor(list(json.dumps(props).encode()), dtype=torch.uint8)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                          constant_methods={METADATA_METHOD: meta})  # fmt: skip
    out.write_bytes(lowered.to_executorch().buffer)


class ExecuTorchFormat(Format):
    """``.pte`` programs, batch 1; int8 is quantised from the model itself (PT2E), not from the fp32 file."""

    name, title, suffix = "executorch", "ExecuTorch XNNPACK", ".pte"
    batch = "one"
    int8 = True

    def write(self, job: ExportJob, path: Path) -> None:
        _lower(torch.export.export(job.folded_graph(), (job.example_input(),)), job.props("raw", "fp32"), path)

    def write_int8(self, job: ExportJob, fp32: Path, calibration: list[np.ndarray], path: Path) -> None:
        executorch_runtime()
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        example = (job.example_input(),)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(job.folded_graph(), example).module(), quantizer)
        for batch in calibration:
            prepared(torch.from_numpy(batch))
        program = torch.export.export(convert_pt2e(prepared), example)
        _lower(program, job.props("raw", "int8"), path)

    def open(self, path: Path, precision: str = "f32") -> ExecuTorchRunner:
        return ExecuTorchRunner(path)
