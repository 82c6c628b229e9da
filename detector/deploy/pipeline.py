"""The one export pipeline: write -> parity with PyTorch -> (NMS graph) -> (int8 -> drift report) -> accuracy
gate -> atomic move into place. Each format (``FORMATS``) supplies only its writer and runner.

Every file takes ``images`` (N, 3, H, W) float32 RGB in [0, 1] at the model's input size and returns raw or
NMS outputs (``detector.deploy.exported``). Checks, in order, all in a temporary folder:

1. parity: the fp32 file against the checkpoint (BatchNorm unfolded) on synthetic inputs, raw outputs within
   ``parity.BOX_ATOL`` px and ``parity.SCORE_ATOL``; an NMS graph against our ``PostProcessor`` on the raw
   outputs the same runtime computes;
2. int8: the drift of its raw outputs from fp32 on the calibration images, reported (int8 moves outputs by
   design); an int8 NMS graph's agreement is reported too (int8 scores tie often);
3. accuracy (with a labelled set): COCO AP of fp32 and of each reduced precision; one that loses more than
   ``max_ap_loss`` AP points fails.

A failed check is a UserError and nothing is written; report lines go to ``say``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from detector.build import LoadedModel
from detector.deploy.calibration import calibration_batches
from detector.deploy.executorch_format import ExecuTorchFormat
from detector.deploy.formats import ExportJob, Format
from detector.deploy.onnx_format import OnnxFormat
from detector.deploy.openvino_format import OpenVinoFormat
from detector.deploy.parity import Parity, drift_line, int8_drift, nms_parity, raw_parity, sample_inputs
from detector.deploy.torchscript_format import TorchScriptFormat
from detector.errors import UserError
from detector.evaluation.detector_accuracy import accuracy_lines, coco_accuracy

log = logging.getLogger(__name__)
Say = Callable[[str], None]
FORMATS: dict[str, Format] = {f.name: f for f in (OnnxFormat(), OpenVinoFormat(), ExecuTorchFormat(),
                                                  TorchScriptFormat())}  # fmt: skip


@dataclass
class ExportOptions:
    """What to write: ``format`` (a key of ``FORMATS``), ``nms`` (post-processing in the graph, ONNX),
    ``dynamic_batch``, ``calibration`` (image files: int8 calibrated on them), ``accuracy_set`` (annotation
    JSON, image folder: the accuracy gate) with ``max_ap_loss`` (AP points, 0-100), ``source`` (recorded in
    the file; default the model's) and ``check`` (False skips the parity check, e.g. for random weights)."""

    format: str = "onnx"
    nms: bool = False
    dynamic_batch: bool = False
    calibration: list[Path] | None = None
    accuracy_set: tuple[Path, Path] | None = None
    max_ap_loss: float = 1.0
    source: str | None = None
    check: bool = True


@dataclass
class ExportReport:
    """What an export wrote and the checks it passed (None where a check did not run)."""

    path: Path
    format: str
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
        return FORMATS[self.format].describe(self.path, self.outputs, self.precision, self.dynamic_batch)


def default_output_path(weights: str | Path, fmt: str = "onnx", nms: bool = False, int8: bool = False) -> Path:
    """Next to the checkpoint: CKPT.onnx, CKPT.nms.onnx, CKPT.int8.onnx, CKPT.nms.int8.onnx, CKPT.xml,
    CKPT.int8.xml (OpenVINO), CKPT.pte, CKPT.int8.pte (ExecuTorch), CKPT.torchscript.pt."""
    return Path(weights).with_suffix((".nms" if nms else "") + (".int8" if int8 else "") + FORMATS[fmt].suffix)


def check_options(format_name: str, nms: bool = False, int8: bool = False, dynamic_batch: bool = False) -> None:
    """A UserError when format ``format_name`` cannot write what is asked for."""
    fmt = FORMATS[format_name]
    if nms and not fmt.nms:
        raise UserError(f"--nms applies to --format {', '.join(f for f in FORMATS if FORMATS[f].nms)}")
    if int8 and not fmt.int8:
        raise UserError(f"--int8 applies to --format {', '.join(f for f in FORMATS if FORMATS[f].int8)}")
    if dynamic_batch and fmt.batch == "one":
        raise UserError(f"--dynamic-batch: --format {fmt.name} files take batch 1")


def check_parity(name: str, parity: Parity, out: Path, say: Say) -> Parity:
    say(f"{name}: {parity.describe()}")
    if not parity.ok:
        raise UserError(f"{out}: the exported model does not match PyTorch ({parity.describe()}); nothing written")
    return parity


def check_accuracy(rows: dict[str, dict[str, float]], ann: Path, max_ap_loss: float, out: Path, say: Say) -> None:
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


def export(loaded: LoadedModel, out: str | Path, options: ExportOptions, say: Say = log.info) -> ExportReport:
    """Write, check and move into place the export of ``loaded`` that ``options`` describe, at ``out``."""
    check_options(options.format, options.nms, bool(options.calibration), options.dynamic_batch)
    fmt, out = FORMATS[options.format], Path(out)
    dynamic = fmt.batch == "dynamic" or (options.dynamic_batch and fmt.batch == "any")
    job = ExportJob(loaded, dynamic, loaded.source if options.source is None else options.source)
    reference = job.raw_graph()
    size, post = job.input_size, loaded.post

    def torch_raw(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return reference(torch.from_numpy(x))

    report = ExportReport(out, fmt.name, "nms" if options.nms else "raw", dynamic_batch=dynamic)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32 = folder / f"fp32{fmt.suffix}"
        fmt.write(job, fp32)
        fp32_runner = fmt.open(fp32)
        inputs = sample_inputs(size, 2, dynamic)
        if options.check:
            parity = raw_parity(fp32_runner.infer, torch_raw, inputs)
            report.raw_parity = check_parity(f"{fmt.title} vs PyTorch (raw outputs)", parity, out, say)
        files = {"fp32": fp32}
        if options.nms:
            files["fp32"] = folder / f"fp32.nms{fmt.suffix}"
            fmt.write_nms(job, fp32, files["fp32"], "fp32")
            if options.check:  # checked on fp32, where scores rarely tie, against the same runtime's raw outputs
                parity = nms_parity(fmt.open(files["fp32"]).infer, fp32_runner.infer, post, inputs)
                report.nms_parity = check_parity(f"{fmt.title} NMS graph vs our post-processing", parity, out, say)
        if options.calibration:
            batches = calibration_batches(options.calibration, size, loaded.config.data.resize)
            int8 = folder / f"int8{fmt.suffix}"
            fmt.write_int8(job, fp32, batches, int8)
            int8_runner, report.precision = fmt.open(int8), "int8"
            report.int8_drift = int8_drift(fp32_runner.infer, int8_runner.infer, batches[:8])
            say(drift_line(report.int8_drift, len(batches[:8])))
            files["int8"] = int8
            if options.nms:  # int8 scores tie often; NMS may then keep another of the equal-scored boxes: report
                files["int8"] = folder / f"int8.nms{fmt.suffix}"
                fmt.write_nms(job, int8, files["int8"], "int8")
                parity = nms_parity(fmt.open(files["int8"]).infer, int8_runner.infer, post, batches[:2])
                report.int8_nms_parity = parity
                say(f"int8 NMS graph vs our post-processing of the int8 raw outputs: {parity.describe()}")
        if options.accuracy_set:
            ann, images = options.accuracy_set
            runners = fmt.accuracy_runners(files)
            report.accuracy = {name: coco_accuracy(r, ann, images, desc=f"{name} eval") for name, r in runners.items()}
            check_accuracy(report.accuracy, Path(ann), options.max_ap_loss, out, say)
        final = files["int8" if options.calibration else "fp32"]
        out.parent.mkdir(parents=True, exist_ok=True)
        for made, target in zip(fmt.paths(final), fmt.paths(out)):  # an IR's .bin before its .xml
            shutil.move(made, target.with_name(target.name + ".part"))
        for target in reversed(fmt.paths(out)):
            target.with_name(target.name + ".part").replace(target)
    return report
