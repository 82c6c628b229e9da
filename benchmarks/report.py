"""The inference benchmark's paths, its targets as data, and its report (text table and JSON).

Timings are ``Timing`` rows: a path name, threads, batch, rounds timed and the median
milliseconds per call of the stages ``pre``, ``model``, ``post`` and ``e2e`` (torchvision's full call has
``e2e`` only). A target is the ratio of one (path, stage) time to another at 1 thread, batch 1, compared with
a goal: ``>=`` for speed-ups (higher is better), ``<=`` for time ratios (lower is better).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from detector.inference.timing import machine


@dataclass
class Timing:
    """Median milliseconds per call of each stage (``pre``, ``model``, ``post``, ``e2e``) over ``repeats``
    calls of a batch of ``batch`` frames at ``threads`` threads."""

    path: str
    threads: int
    batch: int
    repeats: int
    ms: dict[str, float] = field(default_factory=dict)


TV_E2E = "torchvision e2e"
TV_SPLIT = "torchvision split"
OURS_TV_WEIGHTS = "ours, tv weights, eager"
OURS_EAGER = "ours eager"
ORT_FP32 = "ours onnxruntime fp32"
ORT_FP32_NMS = "ours onnxruntime fp32, NMS graph"
ORT_INT8 = "ours onnxruntime int8"
OV_FP32 = "ours openvino f32"
OV_BF16 = "ours openvino bf16"
OV_INT8 = "ours openvino int8 (NNCF)"
ET_FP32 = "ours executorch xnnpack fp32"
ET_INT8 = "ours executorch xnnpack int8"
OPENCV_DNN = "opencv dnn fp32 (our ONNX file)"  # a peer: benchmarks/opencv_dnn.py
RUNTIME_PATHS = (OURS_EAGER, ORT_FP32, ORT_FP32_NMS, ORT_INT8, OV_FP32, OV_BF16, OV_INT8, ET_FP32, ET_INT8)
PATHS = (TV_E2E, TV_SPLIT, OURS_TV_WEIGHTS, *RUNTIME_PATHS, OPENCV_DNN)
FASTEST = "fastest_e2e_over_ort_fp32_e2e"
FASTEST_GOAL, MAX_AP_LOSS = 0.5, 1.0  # end-to-end time ratio; AP points (0-100) lost against ONNX Runtime fp32
OVER_OPENCV = "fastest_e2e_over_opencv_dnn_e2e"
OVER_OPENCV_GOAL = 0.15  # our fastest path end to end against OpenCV DNN's on the same model
MEMORY = "rss_over_ort_fp32_mb"
MEMORY_GOAL_MB = 100.0  # a runtime's resident set at most ONNX Runtime fp32's + 100 MB


@dataclass(frozen=True)
class Target:
    """``numerator`` time / ``denominator`` time, each a (path, stage), against ``goal`` in ``direction``."""

    name: str
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    goal: float
    direction: str  # ">=" (higher is better) or "<=" (lower is better)

    def value(self, at: dict[str, dict[str, float]]) -> float:
        """The ratio from ``at`` = {path: {stage: ms}} of one (threads, batch) configuration."""
        (num_path, num_stage), (den_path, den_stage) = self.numerator, self.denominator
        return at[num_path][num_stage] / at[den_path][den_stage]

    def met(self, value: float) -> bool:
        return value >= self.goal if self.direction == ">=" else value <= self.goal


TARGETS = (
    Target("post_speedup_same_settings", (TV_SPLIT, "post"), (OURS_TV_WEIGHTS, "post"), 10.0, ">="),
    Target("post_speedup_ours_model", (TV_SPLIT, "post"), (OURS_EAGER, "post"), 10.0, ">="),
    Target("onnx_e2e_over_tv_e2e", (ORT_FP32, "e2e"), (TV_E2E, "e2e"), 0.3, "<="),
    Target("eager_e2e_over_tv_e2e", (OURS_EAGER, "e2e"), (TV_E2E, "e2e"), 0.6, "<="),
    Target("int8_model_over_fp32_model", (ORT_INT8, "model"), (ORT_FP32, "model"), 0.6, "<="),
    Target("int8_e2e_over_fp32_e2e", (ORT_INT8, "e2e"), (ORT_FP32, "e2e"), 0.6, "<="),
)
TARGET_THREADS, TARGET_BATCH = 1, 1


def evaluate_targets(rows: list[Timing], targets: tuple[Target, ...] = TARGETS) -> dict[str, dict]:
    """{name: {"value", "goal", "met"}} at 1 thread, batch 1; empty when that configuration was not run, and
    without the targets whose paths were not timed."""
    at = {r.path: r.ms for r in rows if (r.threads, r.batch) == (TARGET_THREADS, TARGET_BATCH)}
    found = {}
    for t in targets:
        if {t.numerator[0], t.denominator[0]} <= set(at):
            value = t.value(at)
            found[t.name] = {"value": round(value, 3), "goal": t.goal, "met": t.met(value)}
    return found


def fastest_runtime(rows: list[Timing], ap: dict[str, float] | None = None) -> dict | None:
    """The ``FASTEST`` target: the quickest of our runtimes end to end at 1 thread, batch 1, over ONNX Runtime
    fp32's e2e, among the paths losing at most ``MAX_AP_LOSS`` AP points against ORT fp32 when ``ap`` ({path:
    AP 0-1} on a labelled set) is given. None when ORT fp32 was not timed in that configuration."""
    at = {r.path: r.ms["e2e"] for r in rows if (r.threads, r.batch) == (TARGET_THREADS, TARGET_BATCH)}
    if ORT_FP32 not in at:
        return None
    loss = {p: round(100 * (ap[ORT_FP32] - ap[p]), 2) for p in ap if p in at} if ap and ORT_FP32 in ap else {}
    admissible = [p for p in RUNTIME_PATHS if p in at and (not loss or loss.get(p, MAX_AP_LOSS + 1) <= MAX_AP_LOSS)]
    best = min(admissible, key=at.get)
    value = at[best] / at[ORT_FP32]
    return {"value": round(value, 3), "goal": FASTEST_GOAL, "met": value <= FASTEST_GOAL, "backend": best,
            "ap_loss": loss.get(best), "ap_losses": loss}  # fmt: skip


def over_opencv(rows: list[Timing], fastest: dict | None) -> dict | None:
    """The ``OVER_OPENCV`` target: ``fastest``'s path (the ``FASTEST`` target's) end to end over OpenCV DNN's on
    the same ONNX file, at 1 thread, batch 1; None when either was not timed."""
    at = {r.path: r.ms["e2e"] for r in rows if (r.threads, r.batch) == (TARGET_THREADS, TARGET_BATCH)}
    if fastest is None or OPENCV_DNN not in at:
        return None
    value = at[fastest["backend"]] / at[OPENCV_DNN]
    return {"value": round(value, 3), "goal": OVER_OPENCV_GOAL, "met": value <= OVER_OPENCV_GOAL,
            "backend": fastest["backend"]}  # fmt: skip


def _torchvision_e2e(rows: list[Timing], threads: int, batch: int) -> float:
    return next(r.ms["e2e"] for r in rows if (r.path, r.threads, r.batch) == (TV_E2E, threads, batch))


def timing_table(rows: list[Timing], name: str) -> str:
    """One block per (threads, batch): the stage times of every path, e2e per image and x torchvision's e2e."""
    lines = []
    for threads, batch in dict.fromkeys((r.threads, r.batch) for r in rows):
        group = [r for r in rows if (r.threads, r.batch) == (threads, batch)]
        tv = _torchvision_e2e(rows, threads, batch)
        lines.append(f"\nthreads {threads}, batch {batch} (ms per call; our model: {name})")
        lines.append(
            f"{'path':33s} {'pre':>7s} {'model':>7s} {'post':>7s} {'e2e':>8s} {'e2e/img':>8s} {'x tv':>6s} {'reps':>4s}"
        )
        for r in group:
            cells = [f"{r.ms[k]:7.1f}" if k in r.ms else f"{'-':>7s}" for k in ("pre", "model", "post")]
            lines.append(
                f"{r.path:33s} {' '.join(cells)} {r.ms['e2e']:8.1f} {r.ms['e2e'] / batch:8.1f} "
                f"{r.ms['e2e'] / tv:6.2f} {r.repeats:4d}"
            )
    return "\n".join(lines)


def targets_text(found: dict[str, dict], targets: tuple[Target, ...] = TARGETS) -> str:
    """The targets block: value, goal with its direction, met or MISSED."""
    direction = {t.name: t.direction for t in targets} | {FASTEST: "<=", MEMORY: "<=", OVER_OPENCV: "<="}
    lines = [f"\ntargets ({TARGET_THREADS} thread, batch {TARGET_BATCH}):"]
    for key, t in found.items():
        line = f"  {key:30s} {t['value']:8.3f} (goal {direction[key]} {t['goal']}) {'met' if t['met'] else 'MISSED'}"
        if key == FASTEST:
            loss = "not measured (--val-data)" if t["ap_loss"] is None else f"{t['ap_loss']:.2f} AP points"
            line += f": {t['backend']}, AP loss against ORT fp32 {loss}"
        if key == MEMORY:
            line += f": the largest, {t['backend']}"
        if key == OVER_OPENCV:
            line += f": {t['backend']}"
        lines.append(line)
    return "\n".join(lines)


def json_report(rows: list[Timing], model: str, weights: str, score_thresh: float,
                frame: tuple[int, int] = (480, 640), ap: dict[str, float] | None = None,
                resident: dict | None = None) -> dict:  # fmt: skip
    """Everything as JSON: the run's settings, the ``machine`` (CPU, cores, date, package versions), one record
    per timing (``<stage>_ms`` and ``ratio_to_torchvision_e2e``) and the targets."""
    return {
        "model": model,
        "frame": list(frame),
        "score_thresh": score_thresh,
        "weights": weights,
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": [
            {
                "path": r.path,
                "threads": r.threads,
                "batch": r.batch,
                "repeats": r.repeats,
                **{f"{k}_ms": round(v, 3) for k, v in r.ms.items()},
                "ratio_to_torchvision_e2e": round(r.ms["e2e"] / _torchvision_e2e(rows, r.threads, r.batch), 4),
            }
            for r in rows
        ],
        "accuracy_ap": ap or {},
        "memory_mb": resident or {},
        "targets": all_targets(rows, ap, resident),
    }


def memory_target(resident: dict[str, dict[str, float]]) -> dict | None:
    """The ``MEMORY`` target: the largest resident set (VmRSS) of our runtimes minus ONNX Runtime fp32's, MB."""
    if ORT_FP32 not in resident:
        return None
    excess = {p: r["VmRSS"] - resident[ORT_FP32]["VmRSS"] for p, r in resident.items()}
    worst = max(excess, key=excess.get)
    value = round(excess[worst], 1)
    return {"value": value, "goal": MEMORY_GOAL_MB, "met": value <= MEMORY_GOAL_MB, "backend": worst}


def all_targets(rows: list[Timing], ap: dict[str, float] | None = None, resident: dict | None = None) -> dict:
    """``evaluate_targets`` plus the ``FASTEST``, ``OVER_OPENCV`` and (with ``resident``) ``MEMORY`` targets."""
    found = evaluate_targets(rows)
    fastest = fastest_runtime(rows, ap)
    opencv = over_opencv(rows, fastest)
    memory = memory_target(resident) if resident else None
    found |= {FASTEST: fastest} if fastest else {}
    return found | ({OVER_OPENCV: opencv} if opencv else {}) | ({MEMORY: memory} if memory else {})
