"""The inference runtimes: the files each runs, the package that installs it, and opening a runner with one.

Every runtime gives the same runner (``detector.inference.runner.Runner``: frames in, ``Detections`` out), so
the tools, the Python API and the benchmarks treat them alike:

    torch           checkpoints (.pt) and catalog names, PyTorch eager, BatchNorm folded (CPU, CUDA, MPS)
    onnxruntime     our .onnx files (fp32, int8), ONNX Runtime (in the default install)
    openvino        our .onnx files and OpenVINO IRs (.xml, fp32 or NNCF int8), fp32 arithmetic (default install)
    openvino-bf16   the same in bf16 arithmetic, on CPUs with AVX-512 BF16 or AMX
    executorch      our .pte files (fp32, int8), ExecuTorch with the XNNPACK delegate ('.[executorch]')

``auto`` (``detector.deploy.runtime_choice``), the default on the CPU, measures the installed ones and keeps the
fastest.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from detector.build import LoadedModel
from detector.deploy.executorch_format import ExecuTorchRunner
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.onnx_format import OnnxRunner
from detector.deploy.openvino_format import OpenVinoRunner, bf16_supported
from detector.errors import UserError
from detector.inference.device import resolve_device
from detector.inference.runner import Runner, TorchRunner
from detector.weights.resolve import load_model


@dataclass(frozen=True)
class Runtime:
    name: str
    module: str  # the import whose presence means installed
    install: str  # what to pip install for it
    suffixes: tuple[str, ...]  # the files it runs ("" = checkpoints and catalog names)


RUNTIMES = {
    r.name: r
    for r in (
        Runtime("torch", "torch", "torch", ("",)),
        Runtime("onnxruntime", "onnxruntime", "onnxruntime", (".onnx",)),
        Runtime("openvino", "openvino", "openvino", (".onnx", ".xml")),
        Runtime("openvino-bf16", "openvino", "openvino", (".onnx", ".xml")),
        Runtime("executorch", "executorch", "'.[executorch]'", (".pte",)),
    )
}
CHOICES = ("auto", *RUNTIMES)


def file_kind(weights: str | Path) -> str:
    """The suffix that decides the runtimes: ".onnx", ".xml", ".pte", or "" for a checkpoint or a catalog name."""
    suffix = Path(str(weights)).suffix.lower()
    return suffix if suffix in (".onnx", ".xml", ".pte") else ""


def runtimes_for(weights: str | Path) -> list[str]:
    """The runtimes that can run ``weights`` (installed or not), in the table's order."""
    kind = file_kind(weights)
    return [name for name, r in RUNTIMES.items() if kind in r.suffixes]


def default_runtime(weights: str | Path) -> str:
    """The runtime a file opens in off the CPU (where ``auto`` does not measure): the first of the table that runs
    it (torch for checkpoints, onnxruntime for .onnx, openvino for .xml, executorch for .pte)."""
    return runtimes_for(weights)[0]


def installed_module(name: str) -> bool:
    """Whether the package of runtime ``name`` is installed."""
    return importlib.util.find_spec(RUNTIMES[name].module) is not None


def installed(name: str) -> bool:
    """Whether runtime ``name`` runs here: its package installed (and for bf16, a CPU with bf16 kernels)."""
    return installed_module(name) and (name != "openvino-bf16" or bf16_supported())


def open_runner(name: str, weights: str | Path, device: str = "cpu", half: bool = False,
                threads: int | None = None, graph_preprocess: bool = False) -> Runner:  # fmt: skip
    """A runner for ``weights`` on runtime ``name`` (not ``auto``); a runtime that cannot run this file, or is
    not installed, is a one-line UserError naming what to use or install. ``graph_preprocess`` (OpenVINO only):
    single frames resized and normalised inside the compiled model (``OpenVinoRunner``)."""
    if graph_preprocess and name not in ("openvino", "openvino-bf16"):
        raise ValueError(f"graph_preprocess is an OpenVINO option, not one of {name}")
    runtime = RUNTIMES[name]
    if file_kind(weights) not in runtime.suffixes:
        fits = ", ".join(runtimes_for(weights))
        raise UserError(f"--runtime {name} does not run {weights}; runtimes for it: {fits}")
    if not installed(name):
        if installed_module(name):  # openvino-bf16 on a CPU without bf16
            raise UserError(f"--runtime {name}: this CPU has no bf16 kernels in OpenVINO; use --runtime openvino")
        raise UserError(f"--runtime {name} is not installed: pip install {runtime.install}")
    if half and name != "torch":
        raise UserError("--half applies to checkpoints; an exported file runs in the precision it was exported in")
    if name != "torch" and device != "cpu" and not (name == "onnxruntime" and device.startswith("cuda")):
        raise UserError(f"--runtime {name} runs on the CPU (--device cpu)")
    if name == "onnxruntime":
        return OnnxRunner(weights, device, threads)
    if name == "executorch":
        return ExecuTorchRunner(weights, threads)
    if name in ("openvino", "openvino-bf16"):
        return OpenVinoRunner(weights, "bf16" if name == "openvino-bf16" else "f32", threads, graph_preprocess)
    return torch_runner(load_model(weights), device, half)


def torch_runner(m: LoadedModel, device: str = "cpu", half: bool = False) -> TorchRunner:
    """The PyTorch runner of a model already loaded: BatchNorm folded, channels-last on the CPU."""
    on_cpu = resolve_device(device).type == "cpu"
    model = fuse_for_inference(m.model, channels_last=on_cpu)
    return TorchRunner(model, m.post, m.categories, device, half, resize=m.config.data.resize)
