"""Our model through ExecuTorch with the XNNPACK delegate (``pip install '.[executorch]'``): the XNNPACK route,
the kernel library of the mobile runtimes the paper measured its latencies with.

``export_pte_file`` writes a ``.pte`` program: the raw graph (``images`` (1, 3, H, W) float32 in [0, 1] ->
``boxes`` (1, A, 4) xyxy input pixels, ``scores`` (1, A, C)), BatchNorm folded, lowered to XNNPACK; fp32, or
int8 by PyTorch's PT2E post-training quantisation (XNNPACK's symmetric per-channel scheme, calibrated on
images). Our metadata (``detector.deploy.onnx_export.metadata``) is the program's constant method
``detector_metadata`` (UTF-8 JSON as a uint8 tensor), so the file alone suffices. ``ExecuTorchDetector``
runs it with ``ExportedDetector``'s pre- and post-processing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from detector.deploy.exported_detector import ExportedDetector
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.onnx_export import FORMAT, RawOutputs, metadata
from detector.errors import UserError

METADATA_METHOD = "detector_metadata"


def _need_executorch() -> None:
    try:
        import executorch.runtime  # noqa: F401
    except ImportError:
        raise UserError("the executorch runtime needs ExecuTorch: pip install '.[executorch]'") from None


class ExecuTorchDetector(ExportedDetector):
    """A ``.pte`` of ours on ExecuTorch's XNNPACK delegate (see ``ExportedDetector`` for the call)."""

    runtime = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        _need_executorch()
        from executorch.runtime import Runtime

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            program = Runtime.get().load_program(str(path))
        except Exception as exc:  # noqa: BLE001 - ExecuTorch raises RuntimeError and its own types
            raise UserError(f"{path}: ExecuTorch cannot load it: {str(exc).splitlines()[0][:200]}") from None
        if METADATA_METHOD not in program.method_names:
            raise UserError(f"{path}: not exported by tools/export.py (no {METADATA_METHOD} method)")
        raw = program.load_method(METADATA_METHOD).execute([])[0]
        props = json.loads(bytes(raw.tolist()).decode())
        if props.get("detector.format") != FORMAT:
            raise UserError(f"{path}: not exported by tools/export.py (no {FORMAT!r} metadata)")
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
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    meta = torch.tensor(list(json.dumps(props).encode()), dtype=torch.uint8)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                          constant_methods={METADATA_METHOD: meta})  # fmt: skip
    out.write_bytes(lowered.to_executorch().buffer)


def export_pte_file(model, post, categories: list[dict], cfg, out: str | Path, *,
                    int8_calibration_files: list[Path] | None = None,
                    accuracy_set: tuple[str | Path, str | Path] | None = None, max_ap_loss: float = 1.0,
                    source: str = "", say=print):  # fmt: skip
    """Export, check and write a ``.pte`` at ``out``: fp32 (checked against PyTorch as ONNX exports are), or
    int8 (its drift from fp32 reported; with ``accuracy_set`` fp32 and int8 scored, int8 allowed to lose at
    most ``max_ap_loss`` AP points). Nothing is written when a check fails. Returns the ``ExportReport``."""
    _need_executorch()
    from detector.deploy.parity import drift_line, int8_drift, raw_parity, sample_inputs
    from detector.deploy.pipeline import ExportReport, check_accuracy, check_parity
    from detector.deploy.quantize import calibration_batches
    from detector.deploy.torch_runtime import Detector
    from detector.evaluation.detector_accuracy import coco_accuracy

    out = Path(out)
    reference = RawOutputs(model, post).eval()  # the checkpoint as it is, BatchNorm unfolded

    def torch_raw(x: np.ndarray):
        with torch.inference_mode():
            return reference(torch.from_numpy(x))

    wrapper = RawOutputs(fuse_for_inference(model), post).eval()
    example = (torch.rand(1, 3, *post.input_size),)
    report = ExportReport(out, "executorch")
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.pte"
        _lower(torch.export.export(wrapper, example), metadata(cfg, post, categories, "raw", "fp32", source), fp32_path)
        fp32 = ExecuTorchDetector(fp32_path)
        parity = raw_parity(fp32.infer, torch_raw, sample_inputs(post.input_size, 2))
        report.raw_parity = check_parity("ExecuTorch XNNPACK vs PyTorch (raw outputs)", parity, out, say)
        final = fp32_path
        if int8_calibration_files:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            batches = calibration_batches(int8_calibration_files, post.input_size)
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            prepared = prepare_pt2e(torch.export.export(wrapper, example).module(), quantizer)
            for batch in batches:
                prepared(torch.from_numpy(batch))
            final = Path(tmp) / "int8.pte"
            props = metadata(cfg, post, categories, "raw", "int8", source)
            _lower(torch.export.export(convert_pt2e(prepared), example), props, final)
            report.precision = "int8"
            drift = report.int8_drift = int8_drift(fp32.infer, ExecuTorchDetector(final).infer, batches[:8])
            say(drift_line(drift, len(batches[:8])))
            if accuracy_set:
                ann, images = accuracy_set
                report.accuracy = {
                    "fp32": coco_accuracy(Detector(fuse_for_inference(model), post, categories), ann, images),
                    "int8": coco_accuracy(ExecuTorchDetector(final), ann, images, desc="int8 eval"),
                }
                check_accuracy(report.accuracy, ann, max_ap_loss, out, say)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(final, out)
    return report
