"""Timing: accumulated stage times of a runner, and the one way calls are timed against each other.

Every measurement in the project (``--runtime auto``, the benchmarks, Table 6's latency column) goes through
``interleaved``: untimed warm-up rounds, then rounds in which every call runs once, in turn, so that a change
of load on the machine touches every call alike; the result is the median of each call's rounds.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StageTimes:
    """Accumulated milliseconds per stage and the number of frames they cover."""

    preprocess: float = 0.0
    model: float = 0.0
    postprocess: float = 0.0
    frames: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        if stage in ("preprocess", "model", "postprocess"):
            setattr(self, stage, getattr(self, stage) + ms)
        else:
            self.extra[stage] = self.extra.get(stage, 0.0) + ms

    def record(self, t0: float, t1: float, t2: float, t3: float, frames: int) -> None:
        """One call's perf_counter() marks: start, after pre-processing, after the model, after post-processing."""
        self.add("preprocess", (t1 - t0) * 1e3)
        self.add("model", (t2 - t1) * 1e3)
        self.add("postprocess", (t3 - t2) * 1e3)
        self.frames += frames

    def per_frame(self) -> dict[str, float]:
        n = max(1, self.frames)
        out = {"preprocess": self.preprocess / n, "model": self.model / n, "postprocess": self.postprocess / n}
        out.update({k: v / n for k, v in self.extra.items()})
        return out


# A call to time: it may return its own stage milliseconds ({"pre": ..., "model": ...}); "e2e" is measured around it.
Call = Callable[[], "dict[str, float] | None"]


def interleaved(
    calls: dict[str, Call], rounds: int, warmup: int = 1, budget_s: float | None = None
) -> tuple[dict[str, dict[str, float]], int]:
    """Median milliseconds of every call of ``calls`` over ``rounds`` interleaved rounds after ``warmup``
    untimed ones: ``{name: {"e2e": ms, **the stages the call returned}}``, and the rounds timed. With
    ``budget_s``, fewer rounds (at least 3) when ``rounds`` would take longer than that."""
    start = time.perf_counter()
    for _ in range(warmup):
        for call in calls.values():
            call()
    if budget_s is not None and warmup:
        per_round = (time.perf_counter() - start) / warmup
        rounds = max(3, min(rounds, int(budget_s / max(per_round, 1e-6))))
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            stages = call() or {}
            samples[name].append({**stages, "e2e": (time.perf_counter() - t0) * 1e3})
    medians = {name: {k: statistics.median(s[k] for s in rows) for k in rows[0]} for name, rows in samples.items()}
    return medians, rounds


def median_ms(call: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in milliseconds of ``call()`` over ``repeats`` runs after ``warmup`` runs."""

    def timed() -> None:
        call()  # its result is not a stage dict

    medians, _ = interleaved({"call": timed}, repeats, warmup)
    return medians["call"]["e2e"]


def cpuinfo_field(*keys: str) -> str:
    """The value of the first line of /proc/cpuinfo whose key is one of ``keys`` ("" when there is none, or
    not on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in keys:
                return value.strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    return cpuinfo_field("model name") or f"{platform.machine()} {platform.processor()}".strip()


def machine(packages: tuple[str, ...] = ("torch", "torchvision", "onnxruntime", "openvino", "executorch")) -> dict:
    """What every published figure names beside it: the CPU, its cores, the date and the installed versions of
    ``packages``."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "packages": versions}


def machine_line(m: dict) -> str:
    """A ``machine()`` record as the line printed beside a figure: "CPU, N cores, date; package version, ..."."""
    packages = ", ".join(f"{name} {version}" for name, version in m["packages"].items())
    return f"{m['cpu']}, {m['cores']} cores, {m['date']}; {packages}"
