"""ONNX files of ours: the writer (raw graph, NMS graph, int8 from ``detector.deploy.onnx_int8``) and the
runner in ONNX Runtime. Both (onnx, onnxruntime: default install) are imported on first use.

The metadata (``detector.deploy.exported.metadata``) is the file's ``metadata_props``, so the file alone
suffices; OpenVINO reads the same files (``detector.deploy.openvino_format``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detector.deploy import onnx_int8
from detector.deploy.exported import NMS_OUTPUTS, RAW_OUTPUTS, ExportedRunner, check_format
from detector.deploy.formats import ExportJob, Format
from detector.deploy.graphs import NmsOutputs
from detector.errors import UserError
from detector.ssd.postprocess import PostProcessor

OPSET = 17


def onnx_module():
    """The ``onnx`` package (default install)."""
    try:
        import onnx
        import onnx.compose
        import onnx.version_converter
    except ImportError:
        raise UserError("ONNX export needs onnx: pip install onnx") from None
    return onnx


def onnxruntime_module():
    """The ``onnxruntime`` package (default install)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("the onnxruntime runtime needs ONNX Runtime: pip install onnxruntime") from None
    return onnxruntime


def _trace(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
           dynamic: dict[str, dict[int, str]] | None) -> None:  # fmt: skip
    # The TorchScript-based exporter (dynamo=False): the dynamo one needs onnxscript and has no NMS symbolic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)  # fmt: skip


def write_raw(job: ExportJob, path: Path) -> None:
    """The raw graph of ``job`` (BatchNorm folded first) at ``path``, without metadata."""
    dynamic = {name: {0: "batch"} for name in ("images", *RAW_OUTPUTS)} if job.dynamic_batch else None
    _trace(job.folded_graph(), (job.example_input(),), path, ["images"], list(RAW_OUTPUTS), dynamic)


def _nms_graph(post: PostProcessor, num_anchors: int, num_classes: int, path: Path, dynamic_batch: bool) -> None:
    """The post-processing graph alone, (boxes, scores) -> NMS outputs, at ``path``."""
    xy = torch.rand(1, num_anchors, 2) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(1, num_anchors, 2) * 50], -1)
    scores = torch.rand(1, num_anchors, num_classes)
    dynamic = {name: {0: "batch"} for name in RAW_OUTPUTS} if dynamic_batch else {}
    dynamic.update({name: {0: "detections"} for name in NMS_OUTPUTS})
    module = NmsOutputs(post, num_anchors).eval()
    _trace(module, (boxes, scores), path, list(RAW_OUTPUTS), list(NMS_OUTPUTS), dynamic)


def append_nms(raw, post: PostProcessor, dynamic_batch: bool):
    """The ``onnx.ModelProto`` ``raw`` (fp32 or quantised) followed by the NMS graph, as one model."""
    onnx = onnx_module()
    scores_shape = raw.graph.output[1].type.tensor_type.shape.dim
    num_anchors, num_classes = scores_shape[1].dim_value, scores_shape[2].dim_value
    with tempfile.TemporaryDirectory() as tmp:
        _nms_graph(post, num_anchors, num_classes, Path(tmp) / "nms.onnx", dynamic_batch)
        nms = onnx.load(str(Path(tmp) / "nms.onnx"))
    nms = onnx.compose.add_prefix(nms, "post/", rename_inputs=False, rename_outputs=False)
    raw_domains = {op.domain: op.version for op in raw.opset_import}
    if raw_domains.get("", OPSET) != OPSET:  # the quantiser may raise the default-domain opset
        nms = onnx.version_converter.convert_version(nms, raw_domains[""])
    nms.ir_version = raw.ir_version
    for op in raw.opset_import:
        if op.domain not in {o.domain for o in nms.opset_import}:
            nms.opset_import.add(domain=op.domain, version=op.version)
    return onnx.compose.merge_models(raw, nms, io_map=[(n, n) for n in RAW_OUTPUTS], outputs=list(NMS_OUTPUTS))


def save(model, path: Path, props: dict[str, str]) -> None:
    """Attach ``props`` as the metadata of the ``onnx.ModelProto`` ``model``, check it and write it."""
    onnx = onnx_module()
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file of ours (without loading its weights)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        model = onnx_module().load(str(path), load_external_data=False)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise UserError(f"{path}: not a readable ONNX file: {str(exc)[:200]}") from None
    return check_format({p.key: p.value for p in model.metadata_props}, path)


def session(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session; ``threads`` None uses all cores; ``device`` cpu, cuda or cuda:N."""
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    if device == "cpu":
        providers: list = ["CPUExecutionProvider"]
    elif device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    else:
        raise UserError(f"--device {device}: ONNX files run on cpu or cuda[:N]")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"{path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0][:200]}") from None


class OnnxRunner(ExportedRunner):
    """An ONNX file of ours in ONNX Runtime (see ``Runner`` for the call and its results)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        props = read_metadata(path)
        self.session = session(path, threads, device)
        batch = self.session.get_inputs()[0].shape[0]
        super().__init__(path, props, batch if isinstance(batch, int) else None)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": batch})


class OnnxFormat(Format):
    name, title, suffix = "onnx", "ONNX Runtime", ".onnx"
    int8 = nms = True

    def write(self, job: ExportJob, path: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            write_raw(job, Path(tmp) / "raw.onnx")
            save(onnx_module().load(str(Path(tmp) / "raw.onnx")), path, job.props("raw", "fp32"))

    def write_int8(self, job: ExportJob, fp32: Path, calibration: list[np.ndarray], path: Path) -> None:
        onnx_int8.quantize(fp32, path, calibration)
        save(onnx_module().load(str(path)), path, job.props("raw", "int8"))

    def write_nms(self, job: ExportJob, raw: Path, path: Path, precision: str) -> None:
        graph = append_nms(onnx_module().load(str(raw)), job.loaded.post, job.dynamic_batch)
        save(graph, path, job.props("nms", precision))

    def open(self, path: Path, precision: str = "f32") -> OnnxRunner:
        return OnnxRunner(path)
