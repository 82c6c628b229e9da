"""The benchmark's targets, table and JSON report computed from a few fake timings."""

import pytest

from benchmarks import report
from benchmarks.report import TARGETS, Target, Timing, evaluate_targets, json_report, targets_text, timing_table

# milliseconds per call at 1 thread, batch 1
FAKE = {
    report.TV_E2E: {"e2e": 100.0},
    report.TV_SPLIT: {"pre": 5.0, "model": 40.0, "post": 60.0, "e2e": 105.0},
    report.OURS_TV_WEIGHTS: {"pre": 1.0, "model": 30.0, "post": 4.0, "e2e": 35.0},
    report.OURS_EAGER: {"pre": 1.0, "model": 25.0, "post": 2.0, "e2e": 28.0},
    report.ORT_FP32: {"pre": 1.0, "model": 15.0, "post": 2.0, "e2e": 18.0},
    report.ORT_FP32_NMS: {"pre": 1.0, "model": 22.0, "post": 0.2, "e2e": 23.2},
    report.ORT_INT8: {"pre": 1.0, "model": 11.0, "post": 2.0, "e2e": 14.0},
}


def rows(threads: int = 1, batch: int = 1) -> list[Timing]:
    return [Timing(path, threads, batch, 5, dict(ms)) for path, ms in FAKE.items()]


def test_targets_are_computed_from_the_table():
    found = evaluate_targets(rows())
    assert list(found) == [t.name for t in TARGETS]
    assert found["post_speedup_same_settings"] == {"value": 15.0, "goal": 10.0, "met": True}
    assert found["post_speedup_ours_model"] == {"value": 30.0, "goal": 10.0, "met": True}
    assert found["onnx_e2e_over_tv_e2e"] == {"value": 0.18, "goal": 0.3, "met": True}
    assert found["eager_e2e_over_tv_e2e"] == {"value": 0.28, "goal": 0.6, "met": True}
    assert found["int8_model_over_fp32_model"] == {"value": pytest.approx(0.733), "goal": 0.6, "met": False}
    assert found["int8_e2e_over_fp32_e2e"]["met"] is False
    assert evaluate_targets(rows(threads=2)) == {}  # targets are at 1 thread, batch 1 only
    partial = evaluate_targets([r for r in rows() if r.path != report.ORT_INT8])
    assert "int8_e2e_over_fp32_e2e" not in partial and "eager_e2e_over_tv_e2e" in partial


def test_a_target_is_data():
    faster = Target("x", (report.TV_E2E, "e2e"), (report.OURS_EAGER, "e2e"), 3.0, ">=")
    assert evaluate_targets(rows(), (faster,)) == {"x": {"value": 3.571, "goal": 3.0, "met": True}}
    assert not Target("y", (report.OURS_EAGER, "e2e"), (report.TV_E2E, "e2e"), 0.2, "<=").met(0.28)


def test_table_and_targets_text():
    table = timing_table(rows() + rows(batch=8), "tiny")
    assert "threads 1, batch 1 (ms per call; our model: tiny)" in table and "threads 1, batch 8" in table
    ours = next(line for line in table.splitlines() if line.startswith(report.OURS_EAGER))
    assert ours.split()[-2:] == ["0.28", "5"]  # x tv, repeats
    tv = next(line for line in table.splitlines() if line.startswith(report.TV_E2E))
    assert tv.split()[2:5] == ["-", "-", "-"]
    text = targets_text(evaluate_targets(rows()))
    assert text.splitlines()[1] == "targets (1 thread, batch 1):"
    assert "post_speedup_same_settings" in text and "(goal >= 10.0) met" in text and "(goal <= 0.6) MISSED" in text


def test_json_report_keys():
    data = json_report(rows(), "tiny", "as initialised", 0.001)
    assert {"machine", "load_average", "results", "targets", "weights"} <= set(data)
    machine = data["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and len(machine["date"]) == 10 and "torch" in machine["packages"]
    assert data["frame"] == [480, 640] and data["score_thresh"] == 0.001 and data["model"] == "tiny"
    first, eager = data["results"][0], data["results"][3]
    assert first["ratio_to_torchvision_e2e"] == 1.0 and first["e2e_ms"] == 100.0
    assert eager["path"] == report.OURS_EAGER and eager["post_ms"] == 2.0 and eager["ratio_to_torchvision_e2e"] == 0.28


def test_fastest_runtime_is_the_quickest_admissible_one():
    timed = rows() + [Timing(report.OV_BF16, 1, 1, 5, {"pre": 1.0, "model": 6.0, "post": 2.0, "e2e": 8.0}),
                      Timing(report.OV_INT8, 1, 1, 5, {"pre": 1.0, "model": 4.0, "post": 2.0, "e2e": 7.0})]  # fmt: skip
    fastest = report.fastest_runtime(timed)  # no AP measured: the quickest of all
    assert fastest["backend"] == report.OV_INT8 and fastest["value"] == round(7 / 18, 3) and fastest["met"]
    assert fastest["ap_loss"] is None
    ap = {report.ORT_FP32: 0.40, report.OV_BF16: 0.398, report.OV_INT8: 0.37, report.ORT_INT8: 0.395}
    fastest = report.fastest_runtime(timed, ap)  # int8 loses 3 AP points: bf16 is the fastest admissible
    assert fastest["backend"] == report.OV_BF16 and fastest["ap_loss"] == 0.2 and fastest["value"] == 0.444
    assert fastest["ap_losses"][report.OV_INT8] == 3.0
    assert report.fastest_runtime([r for r in timed if r.path != report.ORT_FP32]) is None
    text = targets_text(report.all_targets(timed, ap))
    assert f"{report.FASTEST}" in text and "ours openvino bf16, AP loss against ORT fp32 0.20 AP points" in text
    assert json_report(timed, "m", "w", 0.001, ap=ap)["targets"][report.FASTEST]["backend"] == report.OV_BF16


def test_memory_target_is_the_largest_excess_over_onnxruntime():
    resident = {report.ORT_FP32: {"VmRSS": 800.0, "VmHWM": 810.0}, report.OV_BF16: {"VmRSS": 890.0, "VmHWM": 900.0},
                report.OURS_EAGER: {"VmRSS": 780.0, "VmHWM": 790.0}}  # fmt: skip
    target = report.memory_target(resident)
    assert target == {"value": 90.0, "goal": 100.0, "met": True, "backend": report.OV_BF16}
    resident[report.OV_INT8] = {"VmRSS": 950.0, "VmHWM": 960.0}
    assert report.memory_target(resident)["met"] is False
    assert report.memory_target({report.OV_BF16: {"VmRSS": 1.0}}) is None
    assert report.MEMORY in report.all_targets(rows(), None, resident)
