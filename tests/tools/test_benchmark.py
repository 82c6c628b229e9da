"""tools/benchmark.py inference --quick --json: every path timed, stage by stage, and the targets evaluated;
on a small checkpoint in `make test`, on the default model (the paper's V3†) in `make test-slow`."""

import json

import pytest

from ..conftest import run_tool
from .test_detect import ENV
from .test_detect import weights as weights  # noqa: F401 - a fixture

PATHS = [
    "torchvision e2e",
    "torchvision split",
    "ours, tv weights, eager",
    "ours eager",
    "ours onnxruntime fp32",
    "ours onnxruntime fp32, NMS graph",
    "ours onnxruntime int8",
]
OPENVINO_PATHS = ["ours openvino f32", "ours openvino bf16", "ours openvino int8 (NNCF)"]
OPENCV_DNN = "opencv dnn fp32 (our ONNX file)"


@pytest.mark.slow
def test_quick_benchmark_json_on_the_paper_model():
    check_report(run_tool("tools/benchmark.py", "inference", "--quick", "--json", env=ENV, timeout=300), "V3†")


def test_quick_benchmark_json_on_a_checkpoint(weights):  # noqa: F811
    result = run_tool("tools/benchmark.py", "--quick", "--json", "--weights", str(weights), env=ENV, timeout=300)
    check_report(result, weights.name)  # without a subcommand: inference


def check_report(result, model: str) -> None:
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["score_thresh"] == 0.001 and report["frame"] == [480, 640] and report["model"].startswith(model)
    assert {"machine", "load_average", "results", "targets", "weights"} <= set(report)
    assert {"torch", "onnxruntime"} <= set(report["machine"]["packages"]) and report["machine"]["cpu"]
    rows = report["results"]
    from detector.deploy import runtimes

    openvino = [p for p in OPENVINO_PATHS if runtimes.installed("openvino-bf16") or "bf16" not in p]
    assert [r["path"] for r in rows] == PATHS + (openvino if runtimes.installed("openvino") else []) + [OPENCV_DNN]
    for row in rows:
        assert (row["threads"], row["batch"]) == (1, 1) and row["repeats"] >= 3
        assert row["e2e_ms"] > 0 and row["ratio_to_torchvision_e2e"] > 0
        if row["path"] != "torchvision e2e":
            assert all(row[f"{stage}_ms"] > 0 for stage in ("pre", "model", "post"))
            # each stage is part of every call, so its median cannot exceed the median of the whole call
            assert max(row["pre_ms"], row["model_ms"], row["post_ms"]) <= row["e2e_ms"]
    assert rows[0]["ratio_to_torchvision_e2e"] == 1.0
    assert set(report["targets"]) == {
        "post_speedup_same_settings",
        "post_speedup_ours_model",
        "onnx_e2e_over_tv_e2e",
        "eager_e2e_over_tv_e2e",
        "int8_model_over_fp32_model",
        "int8_e2e_over_fp32_e2e",
        "fastest_e2e_over_ort_fp32_e2e",
        "fastest_e2e_over_opencv_dnn_e2e",
    }
    assert all(isinstance(t["met"], bool) and t["value"] > 0 for t in report["targets"].values())
    fastest = report["targets"]["fastest_e2e_over_ort_fp32_e2e"]
    by_path = {r["path"]: r["e2e_ms"] for r in rows}
    assert by_path[fastest["backend"]] == min(by_path[p] for p in by_path if p.startswith("ours ") and "tv" not in p)
    assert fastest["ap_loss"] is None  # no --val-data
    over_opencv = report["targets"]["fastest_e2e_over_opencv_dnn_e2e"]
    assert over_opencv["backend"] == fastest["backend"]
    assert over_opencv["value"] == pytest.approx(by_path[fastest["backend"]] / by_path[OPENCV_DNN], abs=1e-3)
    assert "threads 1, batch 1" in result.stderr and "targets (1 thread, batch 1)" in result.stderr


def test_the_machine_check_runs_on_the_cpu():
    """tools/benchmark.py gpu on the CPU: the recipe set up as training sets it up, every figure measured."""
    from ..conftest import tool_in_process

    # micro-batches of 2: the memory is measured at 2 and 4 (half of 2 would fail in BatchNorm)
    small = ["model.backbone=mobilenet_v3_small", "model.image_size=[64, 64]", "train.batch_size=8",
             "train.micro_batch=2", "data.workers=0"]  # fmt: skip
    result = tool_in_process("tools/benchmark.py", "gpu", "--json", "--images", "16", "--steps", "2", "--set", *small)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and report["recipe"] == "table6_v3_large_reduced_paper.yaml"
    assert (report["batch_size"], report["micro_batch"], report["micro_batches_per_step"]) == (8, 2, 4)
    assert not report["amp"] and report["workers"] == 0
    memory = report["memory_bytes"]
    assert memory["peak"] >= memory["peak_half"] > 0 and memory["per_image"] >= 0 and memory["auto"] == 8
    assert memory["sizes"] == [2, 4]
    for key in ("worker_images_per_s", "loader_images_per_s", "step_images_per_s", "end_to_end_images_per_s"):
        assert report[key] > 0, key
    # the paper recipe's 1731 epochs of COCO's 118,287 images at 8 a step, at the measured end-to-end rate
    assert report["recipe_steps"] == 1731 * (118_287 // 8)
    hours = report["recipe_steps"] * 8 / report["end_to_end_images_per_s"] / 3600
    assert report["projected_hours"] == pytest.approx(hours)
    assert report["machine"]["cpu"] and "torch" in report["machine"]["packages"]
