"""OpenVINO (default install, imported on first use; NNCF for int8 IRs: ``pip install '.[openvino]'``): the
runner of our ONNX files and IRs, fp32, bf16 or OpenVINO's own int8, and the IR writer.

OpenVINO reads our ONNX files directly (fp32 or QDQ int8) and its own IR (``.xml`` + ``.bin``: fp32, or int8
from NNCF's post-training quantisation). Our metadata travels in the model's ``rt_info["framework"]``:
OpenVINO copies an ONNX file's ``metadata_props`` there, and the IR keeps it.

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
import tempfile
from pathlib import Path

import numpy as np

from detector.deploy.exported import ExportedRunner, check_format
from detector.deploy.formats import ExportJob, Format
from detector.deploy.onnx_format import OnnxFormat
from detector.errors import UserError

log = logging.getLogger(__name__)
PRECISIONS = ("f32", "bf16")


def openvino_module():
    """The ``openvino`` package (default install)."""
    try:
        import openvino
    except ImportError:
        raise UserError("the openvino runtime needs OpenVINO: pip install openvino") from None
    return openvino


@functools.cache
def openvino_core():
    """The process's one ``openvino.Core``, kept until exit. Each Core's CPU plugin installs an alternate signal
    stack on the calling thread and, when destroyed, unmaps it and puts back the one it found: Cores destroyed
    out of creation order leave the thread on an unmapped stack, and the next signal (a child's exit, with
    Python's SA_ONSTACK handlers) crashes the process. One Core that lives on never does."""
    return openvino_module().Core()


@functools.cache
def bf16_supported() -> bool:
    """Whether OpenVINO has bf16 kernels on this CPU (its OPTIMIZATION_CAPABILITIES lists BF16)."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def read_props(model, path: Path) -> dict[str, str]:
    """Our metadata from an OpenVINO model's rt_info (an ONNX file's metadata_props, or an IR's copy)."""
    info = model.get_rt_info()
    framework = info["framework"] if "framework" in info else {}
    props = {key: value.astype(str) for key, value in dict(framework).items() if key.startswith("detector.")}
    return check_format(props, path)


def write_ir(source: Path, out_xml: Path, calibration: list[np.ndarray] | None = None) -> None:
    """An OpenVINO IR (``out_xml`` + ``.bin``, fp32 weights) of a raw graph of ours (an ONNX file or an IR),
    with its metadata; with ``calibration`` ((1, 3, H, W) float32 batches) quantised to int8 by NNCF."""
    ov = openvino_module()
    model = openvino_core().read_model(str(source))
    props = read_props(model, source)
    if calibration:
        try:
            import nncf
        except ImportError:
            raise UserError("OpenVINO int8 needs NNCF: pip install '.[openvino]'") from None
        logging.getLogger("nncf").setLevel(logging.WARNING)
        # MIXED: symmetric weights, asymmetric activations (h-swish outputs are not centred on zero). NNCF's
        # progress bar goes to stdout; stderr keeps stdout for results (benchmark --json)
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(calibration))  # fmt: skip
        props["detector.precision"] = "int8"
    for key, value in props.items():  # set again: quantisation builds a new model
        model.set_rt_info(value, ["framework", key])
    ov.save_model(model, str(out_xml), compress_to_fp16=False)


def with_graph_preprocessing(model, input_size: tuple[int, int], resize: str):
    """A copy of ``model`` (input (1, 3, H, W) float32 RGB in [0, 1]) that takes a decoded frame instead: (1, h, w,
    3) uint8 RGB of any h, w -> float -> bilinear resize to ``input_size`` as ``resize_rgb`` does it -> / 255 ->
    NCHW, inside the compiled model (OpenVINO's pre-processing API; the resize is an ``Interpolate``).

    ``cv2``: half-pixel centres, then rounded to integers as OpenCV's uint8 result is (equal to ``resize_rgb`` on
    every pixel tested); ``tf_legacy``: TF's asymmetric source coordinates (i * in / out), kept in float."""
    ov = openvino_module()
    from openvino import opset11 as ops
    from openvino.preprocess import PrePostProcessor

    h, w = input_size
    model = model.clone()
    model.reshape([1, 3, h, w])

    def resize_step(node):
        out = ops.interpolate(node, ops.constant(np.array([h, w], np.int64)), mode="linear_onnx",
                              shape_calculation_mode="sizes", axes=ops.constant(np.array([2, 3], np.int64)),
                              coordinate_transformation_mode="asymmetric" if resize == "tf_legacy"
                              else "half_pixel")  # fmt: skip
        if resize != "tf_legacy":
            out = ops.floor(ops.add(out, ops.constant(np.float32(0.5))))  # OpenCV rounds half up
        return out.output(0)

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_layout(ov.Layout("NCHW"))
    steps.custom(resize_step).scale(255.0)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


class OpenVinoRunner(ExportedRunner):
    """An ONNX file of ours or an OpenVINO IR of ours on the CPU (see ``Runner`` for the call).

    ``graph_preprocess``: one frame per call is resized and normalised inside the compiled model
    (``with_graph_preprocessing``; batches of several frames, and ``detect_resized``, keep Python's)."""

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None,
                 graph_preprocess: bool = False) -> None:  # fmt: skip
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
        if precision == "bf16" and not bf16_supported():
            raise UserError("--runtime openvino-bf16: this CPU has no bf16 kernels in OpenVINO (use openvino)")
        core = openvino_core()
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
        self.graph_preprocess = graph_preprocess
        if graph_preprocess:
            framed = with_graph_preprocessing(model, self.input_size, self.resize)
            self.frame_request = core.compile_model(framed, "CPU", self.config).create_infer_request()
        elif batch.is_static:
            self._request(batch.get_length())

    def prepare(self, frames: list[np.ndarray]) -> np.ndarray:
        """One frame with ``graph_preprocess``: (1, h, w, 3) uint8 as decoded; else the resized float batch."""
        if self.graph_preprocess and len(frames) == 1:
            return np.ascontiguousarray(frames[0][None])
        return super().prepare(frames)

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
        """(N, 3, H, W) float32, or with ``graph_preprocess`` a (1, h, w, 3) uint8 frame -> the raw outputs."""
        request = self.frame_request if batch.dtype == np.uint8 else self._request(batch.shape[0])
        request.infer({0: batch})
        return [request.get_output_tensor(i).data.copy() for i in range(len(self.model.outputs))]


class OpenVinoFormat(Format):
    """IRs, written from our ONNX graph; checked in OpenVINO at f32. Without int8, the accuracy gate also
    scores the fp32 file at bf16 where this CPU has it (a precision the runtime offers for any file)."""

    name, title, suffix = "openvino", "OpenVINO IR", ".xml"
    int8 = True

    def write(self, job: ExportJob, path: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            OnnxFormat().write(job, Path(tmp) / "fp32.onnx")
            write_ir(Path(tmp) / "fp32.onnx", path)

    def write_int8(self, job: ExportJob, fp32: Path, calibration: list[np.ndarray], path: Path) -> None:
        write_ir(fp32, path, calibration)

    def open(self, path: Path, precision: str = "f32") -> OpenVinoRunner:
        return OpenVinoRunner(path, precision)

    def accuracy_runners(self, files: dict[str, Path]) -> dict[str, ExportedRunner]:
        runners = super().accuracy_runners(files)
        if "int8" not in files and bf16_supported():
            runners["bf16"] = self.open(files["fp32"], "bf16")
        return runners

    def paths(self, path: Path) -> list[Path]:
        return [path, path.with_suffix(".bin")]
