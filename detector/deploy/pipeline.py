"""The export pipeline: checkpoint -> raw ONNX graph -> parity check -> (NMS graph) -> (int8) -> file; TorchScript.

Every exported graph takes ``images`` (N, 3, H, W) float32 RGB in [0, 1] at the model's input size (N fixed
at 1, or dynamic) and returns either the raw outputs ``boxes`` (N, A, 4) float32 xyxy input pixels and
``scores`` (N, A, C) float32, or with NMS ``det_batch`` (D,) int64, ``det_boxes`` (D, 4) float32 xyxy input
pixels, ``det_scores`` (D,) float32 and ``det_labels`` (D,) int64 1..C (see ``detector.deploy.onnx_export``).

``OnnxExporter`` exports the raw graph of a model once (BatchNorm folded) into a temporary folder and, with
``check``, compares it with the unfolded PyTorch model on sample inputs; it then writes fp32 and int8, raw and
NMS variants beside it. A mismatch (``detector.deploy.parity``: boxes > 0.01 px or scores > 1e-4 apart, or
other detections) is a UserError and nothing is written. ``export_onnx_file`` / ``export_torchscript_file``
run the whole pipeline for one output file. Report lines (parity, int8 drift, accuracy) go to ``say``,
``log.info`` unless the caller passes e.g. ``print``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from detector.config import Config
from detector.deploy.onnx_export import RawOutputs, append_nms, export_raw, metadata, save
from detector.deploy.onnx_runtime import OnnxDetector, session
from detector.deploy.parity import Parity, drift_line, int8_drift, nms_parity, raw_parity, sample_inputs
from detector.deploy.quantize import ImageCalibration, calibration_batches, quantize_raw
from detector.deploy.torchscript import export_torchscript, load_torchscript
from detector.errors import UserError
from detector.evaluation.detector_accuracy import accuracy_lines, coco_accuracy
from detector.ssd.postprocess import PostProcessor

log = logging.getLogger(__name__)
Say = Callable[[str], None]


@dataclass
class ExportReport:
    """What an export wrote and the checks it passed (None where a check did not run)."""

    path: Path
    format: str  # onnx | openvino | executorch | torchscript
    outputs: str = "raw"  # raw | nms
    precision: str = "fp32"  # fp32 | int8
    dynamic_batch: bool = False
    raw_parity: Parity | None = None
    nms_parity: Parity | None = None
    int8_drift: dict[str, float] | None = None
    int8_nms_parity: Parity | None = None
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)

    def describe(self) -> str:
        """The final ``wrote ...`` line."""
        if self.format == "torchscript":
            return f"wrote {self.path} (TorchScript, raw outputs)"
        batch = "dynamic" if self.dynamic_batch else 1
        size = self.path.stat().st_size / 1e6
        if self.format == "executorch":
            return f"wrote {self.path} (ExecuTorch XNNPACK, raw, {self.precision}, batch 1, {size:.1f} MB)"
        if self.format == "openvino":
            size += self.path.with_suffix(".bin").stat().st_size / 1e6
            return f"wrote {self.path} + .bin (OpenVINO IR, raw, {self.precision}, batch {batch}, {size:.1f} MB)"
        return f"wrote {self.path} ({self.outputs} outputs, {self.precision}, batch {batch}, {size:.1f} MB)"


def default_output_path(weights: str | Path, fmt: str = "onnx", nms: bool = False, int8: bool = False) -> Path:
    """Next to the checkpoint: CKPT.torchscript.pt, CKPT.onnx, CKPT.nms.onnx, CKPT.int8.onnx, CKPT.nms.int8.onnx,
    CKPT.xml, CKPT.int8.xml (OpenVINO), CKPT.pte, CKPT.int8.pte (ExecuTorch)."""
    weights = Path(weights)
    if fmt == "torchscript":
        return weights.with_suffix(".torchscript.pt")
    suffix = {"openvino": ".xml", "executorch": ".pte"}.get(fmt, ".onnx")
    return weights.with_suffix((".nms" if nms else "") + (".int8" if int8 else "") + suffix)


def check_accuracy(rows: dict[str, dict[str, float]], ann: str | Path, max_ap_loss: float, out: Path | str,
                   say: Say) -> None:  # fmt: skip
    """Print the AP table of ``rows`` ("fp32" first) and refuse a row more than ``max_ap_loss`` AP points
    (0-100 scale) below fp32: a UserError, nothing written."""
    for line in accuracy_lines(rows, ann):
        say(line)
    reference = rows["fp32"]["AP"]
    for name, row in rows.items():
        loss = 100 * (reference - row["AP"])
        if loss > max_ap_loss:
            raise UserError(f"{out}: {name} loses {loss:.2f} AP points against fp32 on {ann} (the limit is "
                            f"{max_ap_loss:g}, --max-ap-loss); nothing written")  # fmt: skip


def sample_batches(size: tuple[int, int], dynamic: bool) -> list[np.ndarray]:
    """Two sample images as the graph takes them: if dynamic one batch of both and a single one, else one by one."""
    inputs = sample_inputs(size, 2)
    return [np.concatenate(inputs), inputs[0]] if dynamic else inputs


def check_parity(name: str, parity: Parity, out: Path | str, say: Say) -> Parity:
    say(f"{name}: {parity.describe()}")
    if not parity.ok:
        raise UserError(f"{out}: the exported model does not match PyTorch ({parity.describe()}); nothing written")
    return parity


def _runner(sess) -> Callable[[np.ndarray], list[np.ndarray]]:
    return lambda x: sess.run(None, {"images": x})


class OnnxExporter:
    """The raw ONNX graph of ``model`` in a temporary folder, and its fp32 / int8, raw / NMS variants.

    ``out`` is the file being made (named in errors); ``source`` goes into the metadata (``detector.source``).
    The files returned by ``fp32`` and ``int8`` live until ``close()`` (or the end of a ``with`` block).
    """

    def __init__(self, model: torch.nn.Module, post: PostProcessor, categories: list[dict], cfg: Config, *,
                 dynamic_batch: bool = False, source: str = "", out: Path | str = "export", check: bool = True,
                 say: Say = log.info) -> None:  # fmt: skip
        self.post, self.categories, self.cfg = post, categories, cfg
        self.dynamic_batch, self.source, self.out, self.check, self.say = dynamic_batch, source, out, check, say
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.raw_path = self.dir / "raw.onnx"
        self.inputs = sample_batches(post.input_size, dynamic_batch)
        self.reference = RawOutputs(model, post).eval()  # the checkpoint as it is, BatchNorm unfolded
        self.report = ExportReport(self.raw_path, "onnx", dynamic_batch=dynamic_batch)
        try:
            export_raw(model, post, self.raw_path, dynamic_batch)
            self.fp32_raw = session(self.raw_path)
            if check:
                parity = raw_parity(_runner(self.fp32_raw), self.torch_raw, self.inputs)
                self.report.raw_parity = check_parity("ONNX Runtime vs PyTorch (raw outputs)", parity, out, say)
        except BaseException:
            self.close()
            raise

    def torch_raw(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The checkpoint's raw outputs (BatchNorm unfolded) on a (N, 3, H, W) float32 batch: the reference."""
        with torch.inference_mode():
            return self.reference(torch.from_numpy(x))

    def _props(self, nms: bool, precision: str) -> dict[str, str]:
        outputs = "nms" if nms else "raw"
        return metadata(self.cfg, self.post, self.categories, outputs, precision, self.source)

    def _save(self, raw_path: Path, nms: bool, precision: str, path: Path) -> Path:
        graph = onnx.load(str(raw_path))
        save(append_nms(graph, self.post, self.dynamic_batch) if nms else graph, path, self._props(nms, precision))
        return path

    def fp32(self, nms: bool = False) -> Path:
        """The fp32 file (raw outputs, or with ``nms`` the NMS graph, checked against our PostProcessor)."""
        path = self.dir / ("fp32.nms.onnx" if nms else "fp32.onnx")
        if path.exists():
            return path
        self._save(self.raw_path, nms, "fp32", path)
        if nms and self.check:  # the NMS graph is checked on fp32, where scores rarely tie
            # against our PostProcessor on the raw outputs the graph itself computes (the raw graph was checked
            # against PyTorch above): last-bit differences between runtimes cannot flip a near-tie NMS decision
            parity = nms_parity(_runner(session(path)), _runner(self.fp32_raw), self.post, self.inputs)
            name = "ONNX NMS graph vs PyTorch post-processing"
            self.report.nms_parity = check_parity(name, parity, self.out, self.say)
        return path

    def int8(self, calibration_files: list[Path], nms: bool = False) -> Path:
        """The int8 file, quantised with min/max ranges of ``calibration_files`` (images); with ``check`` the
        drift of its raw outputs from fp32 is reported (and with ``nms`` its NMS graph against ours)."""
        size = self.post.input_size
        int8_raw_path = self.dir / "raw.int8.onnx"
        if not int8_raw_path.exists():
            quantize_raw(self.raw_path, int8_raw_path, ImageCalibration(calibration_files, size))
        path = self._save(int8_raw_path, nms, "int8", self.dir / ("int8.nms.onnx" if nms else "int8.onnx"))
        if not self.check:
            return path
        int8_raw = session(int8_raw_path)
        images = calibration_batches(calibration_files[:8], size, desc="int8 check")
        drift = self.report.int8_drift = int8_drift(_runner(self.fp32_raw), _runner(int8_raw), images)
        self.say(drift_line(drift, len(images)))
        if nms:  # int8 scores tie often; NMS may then keep another of the equal-scored boxes: report only
            parity = nms_parity(_runner(session(path)), _runner(int8_raw), self.post, images[:2])
            self.report.int8_nms_parity = parity
            self.say(f"int8 NMS graph vs PyTorch post-processing of the int8 raw outputs: {parity.describe()}")
        return path

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> OnnxExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_onnx_file(model: torch.nn.Module, post: PostProcessor, categories: list[dict], cfg: Config,
                     out: str | Path, *, nms: bool = False, dynamic_batch: bool = False,
                     int8_calibration_files: list[Path] | None = None,
                     accuracy_set: tuple[str | Path, str | Path] | None = None, max_ap_loss: float = 1.0,
                     source: str = "", say: Say = log.info) -> ExportReport:  # fmt: skip
    """Export, check and write one ONNX file at ``out``: fp32, or int8 when ``int8_calibration_files`` are
    given, raw outputs or with ``nms`` the NMS graph. ``accuracy_set`` (annotation JSON, image folder) also
    scores fp32 and the int8 file on that COCO-format set (AP, AP50), and int8 may lose at most
    ``max_ap_loss`` AP points. Nothing is written when a check fails."""
    out = Path(out)
    with OnnxExporter(
        model, post, categories, cfg, dynamic_batch=dynamic_batch, source=source, out=out, say=say
    ) as exporter:
        fp32 = final = exporter.fp32(nms)
        report = exporter.report
        if int8_calibration_files:
            final = exporter.int8(int8_calibration_files, nms)
            report.precision = "int8"
        if accuracy_set:
            ann, images = accuracy_set
            files = {"fp32": fp32, **({"int8": final} if final != fp32 else {})}
            for name, path in files.items():
                report.accuracy[name] = coco_accuracy(OnnxDetector(path), ann, images, desc=f"{name} eval")
            check_accuracy(report.accuracy, ann, max_ap_loss, out, say)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(final, out)
    report.path, report.outputs = out, ("nms" if nms else "raw")
    return report


def export_torchscript_file(model: torch.nn.Module, post: PostProcessor, categories: list[dict], cfg: Config,
                            out: str | Path, *, source: str = "", say: Say = log.info) -> ExportReport:  # fmt: skip
    """Trace the raw graph (BatchNorm folded), reload it, check it against PyTorch and write it at ``out``."""
    out = Path(out)
    props = metadata(cfg, post, categories, "raw", "fp32", source)
    reference = RawOutputs(model, post).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "model.pt"
        export_torchscript(model, post, tmp_out, props)
        module, _ = load_torchscript(tmp_out)

        def run(x: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [t.numpy() for t in module(torch.from_numpy(x))]

        def torch_raw(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.inference_mode():
                return reference(torch.from_numpy(x))

        parity = raw_parity(run, torch_raw, sample_batches(post.input_size, True))
        check_parity("TorchScript vs PyTorch", parity, out, say)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp_out, out)
    return ExportReport(out, "torchscript", dynamic_batch=True, raw_parity=parity)
