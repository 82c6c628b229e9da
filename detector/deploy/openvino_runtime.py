"""Our exported files in OpenVINO (``pip install '.[openvino]'``): fp32, bf16 and OpenVINO's own int8.

OpenVINO reads our ONNX files directly (fp32 or QDQ int8) and its own IR (``.xml`` + ``.bin``, written by
``export_ir``: fp32, or int8 from NNCF's post-training quantisation). Our metadata travels in the model's
``rt_info["framework"]``: OpenVINO copies an ONNX file's ``metadata_props`` there, and the IR keeps it.

``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT``: ``f32`` computes what the file says (fp32 or int8
with fp32 in between); ``bf16`` runs the float parts in bfloat16, on CPUs with AVX-512 BF16 or AMX (8 bits of
mantissa: boxes move by a fraction of a pixel on trained models; the export and the benchmark report the AP).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from pathlib import Path

import numpy as np

from detector.deploy.exported_detector import ExportedDetector
from detector.deploy.onnx_export import FORMAT
from detector.errors import UserError

log = logging.getLogger(__name__)
PRECISIONS = ("f32", "bf16")


def _openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("the openvino runtime needs OpenVINO: pip install '.[openvino]'") from None
    return openvino


@functools.cache
def bf16_supported() -> bool:
    """Whether OpenVINO has bf16 kernels on this CPU (its OPTIMIZATION_CAPABILITIES lists BF16)."""
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def read_props(model, path: Path) -> dict[str, str]:
    """Our metadata from an OpenVINO model's rt_info (an ONNX file's metadata_props, or an IR's copy)."""
    info = model.get_rt_info()
    framework = info["framework"] if "framework" in info else {}
    props = {key: value.astype(str) for key, value in dict(framework).items() if key.startswith("detector.")}
    if props.get("detector.format") != FORMAT:
        raise UserError(f"{path}: not exported by tools/export.py (no {FORMAT!r} metadata)")
    return props


def write_props(model, props: dict[str, str]) -> None:
    for key, value in props.items():
        model.set_rt_info(value, ["framework", key])


class OpenVinoDetector(ExportedDetector):
    """An ONNX file of ours or an OpenVINO IR of ours on the CPU (see ``ExportedDetector`` for the call)."""

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None) -> None:
        ov = _openvino()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
        if precision == "bf16" and not bf16_supported():
            raise UserError("--runtime openvino-bf16: this CPU has no bf16 kernels in OpenVINO (use openvino)")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own RuntimeError subclasses
            raise UserError(f"{path}: OpenVINO cannot read it: {str(exc).splitlines()[0][:200]}") from None
        props = read_props(model, path)
        batch = model.inputs[0].get_partial_shape()[0]
        self.core, self.model = core, model
        self.config = {
            "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
            "NUM_STREAMS": 1,  # one request at a time: latency, not throughput
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.requests: dict[int, object] = {}  # batch size -> infer request of a model compiled for it
        self.runtime = "openvino" if precision == "f32" else "openvino-bf16"
        super().__init__(path, props, batch.get_length() if batch.is_static else None)
        if batch.is_static:
            self._request(batch.get_length())

    def _request(self, n: int):
        """The infer request for batch ``n``. A dynamic-batch file is compiled once per batch size seen, at a
        static shape: OpenVINO's kernels for dynamic shapes are markedly slower (V3† at 1 thread: ~1.5x)."""
        if n not in self.requests:
            model = self.model
            if not model.inputs[0].get_partial_shape().is_static:
                model = model.clone()
                model.reshape([n, 3, *self.input_size])
            self.requests[n] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self.requests[n]

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        request = self._request(batch.shape[0])
        request.infer({0: batch})
        return [request.get_output_tensor(i).data.copy() for i in range(len(self.model.outputs))]


def export_ir(onnx_path: Path, out_xml: Path, calibration: list[np.ndarray] | None = None) -> None:
    """Write an OpenVINO IR (``out_xml`` + ``.bin``, fp32 weights) of a raw ONNX graph of ours, with its metadata;
    with ``calibration`` ((1, 3, H, W) float32 batches) quantised to int8 by NNCF (``pip install '.[openvino]'``)
    and recorded as int8."""
    ov = _openvino()
    model = ov.Core().read_model(str(onnx_path))
    props = read_props(model, onnx_path)
    if calibration:
        try:
            import nncf
        except ImportError:
            raise UserError("OpenVINO int8 needs NNCF: pip install '.[openvino]'") from None
        logging.getLogger("nncf").setLevel(logging.WARNING)
        # MIXED: symmetric weights, asymmetric activations (h-swish outputs are not centred on zero). NNCF's
        # progress bar goes to stdout; stderr keeps stdout for results (benchmark.py --json)
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(calibration))  # fmt: skip
        props["detector.precision"] = "int8"
    write_props(model, props)  # set again: quantisation builds a new model
    ov.save_model(model, str(out_xml), compress_to_fp16=False)


def export_ir_file(model, post, categories: list[dict], cfg, out: str | Path, *, dynamic_batch: bool = False,
                   int8_calibration_files: list[Path] | None = None,
                   accuracy_set: tuple[str | Path, str | Path] | None = None, max_ap_loss: float = 1.0,
                   source: str = "", say=log.info):  # fmt: skip
    """Export, check and write an OpenVINO IR at ``out`` (``.xml`` + ``.bin``, raw outputs): fp32, or int8
    by NNCF from ``int8_calibration_files``. fp32 must match PyTorch as ONNX exports do (OpenVINO at f32);
    int8 reports its drift from fp32. ``accuracy_set`` (annotation JSON, image folder) scores fp32 and int8,
    or without int8 fp32 and bf16 (where this CPU has it); each may lose at most ``max_ap_loss`` AP points.
    Nothing is written when a check fails. Returns the ``ExportReport``."""
    import shutil

    from detector.deploy.parity import drift_line, int8_drift, raw_parity
    from detector.deploy.pipeline import OnnxExporter, check_accuracy, check_parity
    from detector.deploy.quantize import calibration_batches
    from detector.evaluation.detector_accuracy import coco_accuracy

    out = Path(out)
    with OnnxExporter(model, post, categories, cfg, dynamic_batch=dynamic_batch, source=source, out=out,
                      say=say) as exporter:  # fmt: skip
        onnx_fp32 = exporter.fp32()
        fp32_xml = exporter.dir / "fp32.xml"
        export_ir(onnx_fp32, fp32_xml)
        fp32 = OpenVinoDetector(fp32_xml)
        report = exporter.report
        report.raw_parity = check_parity("OpenVINO (f32) vs PyTorch (raw outputs)",
                                   raw_parity(fp32.infer, exporter.torch_raw, exporter.inputs), out, say)  # fmt: skip
        final, files = fp32_xml, {"fp32": (fp32_xml, "f32")}
        if bf16_supported():
            files["bf16"] = (fp32_xml, "bf16")
        if int8_calibration_files:
            batches = calibration_batches(int8_calibration_files, post.input_size)
            final = exporter.dir / "int8.xml"
            export_ir(onnx_fp32, final, batches)
            files = {"fp32": (fp32_xml, "f32"), "int8": (final, "f32")}
            report.precision = "int8"
            drift = report.int8_drift = int8_drift(fp32.infer, OpenVinoDetector(final).infer, batches[:8])
            say(drift_line(drift, len(batches[:8])))
        if accuracy_set:
            ann, images = accuracy_set
            for name, (path, precision) in files.items():
                detector = OpenVinoDetector(path, precision)
                report.accuracy[name] = coco_accuracy(detector, ann, images, desc=f"{name} eval")
            check_accuracy(report.accuracy, ann, max_ap_loss, out, say)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(final.with_suffix(".bin"), out.with_suffix(".bin"))
        shutil.move(final, out)
    report.path, report.format, report.dynamic_batch = out, "openvino", dynamic_batch
    return report
