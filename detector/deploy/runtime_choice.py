"""``--runtime auto``, the default on the CPU: the fastest installed runtime for this model file on this CPU, by a
short measurement.

The candidates are the installed runtimes that run the file (``runtimes.runtimes_for``). A checkpoint (or a
catalog name) is also exported once to a raw fp32 ONNX file in the cache, checked against PyTorch as
``tools/export.py`` checks it, so the ONNX runtimes compete for it too. Each candidate runs the same
640x480 frame: warm-up calls, then interleaved rounds; the lowest median whole-call time wins.

The choice is cached in ``$DETECTOR_CACHE`` (default ``$XDG_CACHE_HOME/detector``, or ``~/.cache/detector``),
``runtime_choice.json``, keyed by the model file's SHA-256, the CPU (model name, flags, cores) and the thread
count: a changed file, another machine or other threads measure again; a cached runtime no longer installed
is measured again too. The first run of a file costs its export (checkpoints only) and the measurement: 7 s in all
for the demo's checkpoint on a 2-core EPYC, imports included; later runs read the cache.

``fp32_only`` (evaluation) leaves out the runtimes that compute in lower precision (``openvino-bf16``), so that a
metric is the model's own. Where a runtime of the default install is missing (a platform without its wheels, an
install with ``--no-deps``), one log line names it and how to install it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detector.checkpoint import atomic_file
from detector.data.synthetic import synthetic_frames
from detector.deploy.pipeline import ExportOptions, export
from detector.deploy.runtimes import RUNTIMES, file_kind, installed, installed_module, open_runner, runtimes_for
from detector.errors import UserError
from detector.inference.runner import Runner
from detector.inference.timing import cpu_name, cpuinfo_field, interleaved
from detector.weights import catalog, hub
from detector.weights.resolve import load_model

log = logging.getLogger(__name__)
WARMUP, ROUNDS = 3, 10  # about 13 calls per candidate: a second or two in all


def cache_dir() -> Path:
    if os.environ.get("DETECTOR_CACHE"):
        return Path(os.environ["DETECTOR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "detector"


def cpu_signature() -> str:
    """The CPU model name, a digest of its feature flags and the core count (what the speed depends on)."""
    flags = cpuinfo_field("flags", "Features")  # x86, ARM
    return f"{cpu_name()} | flags {hashlib.sha256(flags.encode()).hexdigest()[:12]} | {os.cpu_count()} cores"


def model_file(weights: str | Path) -> Path:
    """The file behind ``weights`` (a catalog name is fetched into the hub cache)."""
    entry = catalog.lookup(str(weights))
    if entry is not None:
        return hub.fetch(entry)
    if not Path(weights).is_file():
        raise UserError(f"{weights}: no such file")
    return Path(weights)


def exported_onnx(weights: str | Path, digest: str) -> Path | None:
    """A raw fp32 ONNX file of a checkpoint in the cache (exported and checked once), or None without onnx."""
    if not installed("onnxruntime") or importlib.util.find_spec("onnx") is None:
        return None
    path = cache_dir() / "exports" / f"{digest[:16]}.onnx"
    if not path.is_file():
        log.debug("runtime: exporting %s to ONNX once, to measure the runtimes of ONNX files on it (%s)", weights, path)
        export(load_model(weights), path, ExportOptions(format="onnx", source=str(weights)), say=log.debug)
    return path


def _measure(candidates: dict[str, Runner]) -> dict[str, float]:
    """Median milliseconds of a whole call on one 640x480 frame, the candidates interleaved."""
    frames = synthetic_frames(1)

    def call(runner: Runner) -> Callable[[], None]:
        def run() -> None:
            runner(frames)

        return run

    medians, _ = interleaved({name: call(r) for name, r in candidates.items()}, ROUNDS, WARMUP)
    return {name: ms["e2e"] for name, ms in medians.items()}


def _missing_hint(weights: str | Path) -> None:
    """One log line naming the runtimes of the default install that could run ``weights`` but are missing."""
    runs_onnx = file_kind(weights) in ("", ".onnx")  # a checkpoint competes through its ONNX export
    missing = [RUNTIMES[n].install for n in ("onnxruntime", "openvino") if runs_onnx and not installed_module(n)]
    if missing and file_kind(weights) == "" and importlib.util.find_spec("onnx") is None:
        missing.insert(0, "onnx")
    if missing:
        log.info("runtime: %s not installed (part of the default install; often faster than PyTorch on the CPU): "
                 "pip install %s", ", ".join(missing), " ".join(missing))  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """What ``choose`` picked: the runtime, what to open with it, and OpenVINO's ``graph_preprocess``."""

    runtime: str
    target: Path | str
    graph_preprocess: bool = False

    def open(self, device: str = "cpu", threads: int | None = None) -> Runner:
        return open_runner(self.runtime, self.target, device, threads=threads, graph_preprocess=self.graph_preprocess)


def choose(weights: str | Path, threads: int | None = None, fp32_only: bool = False) -> Choice:
    """The fastest runtime for ``weights`` on this CPU with ``threads``; logs the choice in one line.
    ``fp32_only``: among the runtimes computing in float32 only (see the module docstring). OpenVINO competes
    twice, with Python's pre-processing and with it inside the compiled model (``OpenVinoRunner``)."""
    start = time.perf_counter()
    path = model_file(weights)
    digest = hub.sha256_of(path)
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():  # an IR's weights are in its .bin
        digest = hashlib.sha256((digest + hub.sha256_of(path.with_suffix(".bin"))).encode()).hexdigest()
    key = f"{digest} | {cpu_signature()} | threads {threads or os.cpu_count()}" + (" | fp32" if fp32_only else "")
    store = cache_dir() / "runtime_choice.json"
    try:
        cache = json.loads(store.read_text())
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    _missing_hint(weights)
    # (entries from before the in-graph pre-processing candidates lack "exported": measured again)
    if hit and "exported" in hit and installed(hit["runtime"]) and (not hit["exported"] or Path(hit["file"]).is_file()):
        log.info("runtime: %s, the fastest on this CPU (%.1f ms per 640x480 frame, measured %s; --runtime NAME "
                 "forces one)", hit["label"], hit["ms"], hit["measured"][:10])  # fmt: skip
        # the file of the same contents as given now, or our export of it (never a path typed on another run)
        return Choice(hit["runtime"], hit["file"] if hit["exported"] else weights, hit["graph_preprocess"])
    usable = [n for n in RUNTIMES if installed(n) and not (fp32_only and n == "openvino-bf16")]
    files: dict[str, Path | str] = {name: weights for name in runtimes_for(weights) if name in usable}
    if not file_kind(weights):
        try:
            onnx_file = exported_onnx(weights, digest)
        except UserError as exc:  # e.g. an operator or a mismatch the export refuses: PyTorch still runs it
            log.warning("runtime: the ONNX export for the other runtimes failed (%s); measuring without them", exc)
            onnx_file = None
        if onnx_file is not None:
            files.update({name: onnx_file for name in runtimes_for(onnx_file) if name in usable})
    options = {name: Choice(name, target) for name, target in files.items()}
    if not options:  # no runtime for this file is installed: open_runner says what to install
        return Choice(runtimes_for(weights)[0], weights)
    if len(options) == 1:  # nothing to compare with: no measurement, nothing cached
        name = next(iter(options))
        log.info("runtime: %s, the only one installed for %s", name, weights)
        return options[name]
    if not fp32_only:  # evaluation feeds resized batches: the in-graph variant would not be used
        options |= {f"{name}, pre-processing in the graph": Choice(name, files[name], True)
                    for name in ("openvino", "openvino-bf16") if name in files}  # fmt: skip
    medians = _measure({label: choice.open(threads=threads) for label, choice in options.items()})
    best = min(medians, key=medians.get)
    table = ", ".join(f"{label} {ms:.1f}" for label, ms in sorted(medians.items(), key=lambda kv: kv[1]))
    first = "exported to ONNX and measured" if not file_kind(weights) else "measured"
    log.info("runtime: %s, the fastest on this CPU (ms per 640x480 frame: %s; first run: %s in %.1f s, cached; "
             "--runtime NAME forces one)", best, table, first, time.perf_counter() - start)  # fmt: skip
    choice = options[best]
    cache[key] = {"runtime": choice.runtime, "file": str(choice.target), "exported": choice.target != weights,
                  "graph_preprocess": choice.graph_preprocess, "label": best, "ms": medians[best],
                  "all_ms": medians, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    try:
        with atomic_file(store, "w") as f:  # a concurrent reader sees the old file or the new one
            f.write(json.dumps(cache, indent=1))
    except OSError as exc:
        log.warning("runtime: cannot cache the choice in %s (%s); it will be measured again", store, exc)
    return choice
