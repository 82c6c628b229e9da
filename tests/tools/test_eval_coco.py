import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import STAT_KEYS

from ..conftest import run_tool, tool_in_process
from ..data_fixtures import tiny_dataset


def _gt_as_detections(ann_file):
    data = json.loads(ann_file.read_text())
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in data["annotations"]
    ]


def test_ground_truth_as_detections_scores_one(tmp_path):
    data = tiny_dataset(tmp_path / "data", train=1, val=6)
    ann = data / "annotations" / "instances_val2017.json"
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(_gt_as_detections(ann)))
    result = tool_in_process(
        "tools/eval_coco.py", "--detections", str(dets), "--gt", str(ann), "--output-dir", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert set(metrics) >= set(STAT_KEYS) | {"per_class"}
    assert all(v == pytest.approx(1.0) for v in metrics["per_class"].values())
    assert (tmp_path / "o" / "pr_curve.png").stat().st_size > 0
    assert "AP @[IoU=0.50:0.95" in result.stdout


def test_agrees_with_a_direct_cocoeval_run(tmp_path):
    data = tiny_dataset(tmp_path / "data", train=1, val=8)
    ann = data / "annotations" / "instances_val2017.json"
    dets = _gt_as_detections(ann)
    for i, d in enumerate(dets):  # perturb: some boxes shifted, scores spread, one class swapped
        d["bbox"] = [d["bbox"][0] + (i % 3) * 3, d["bbox"][1], d["bbox"][2] * (1 + 0.1 * (i % 4)), d["bbox"][3]]
        d["score"] = 0.3 + 0.07 * (i % 10)
    dets[0]["category_id"] = 20 if dets[0]["category_id"] != 20 else 3
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    result = tool_in_process(
        "tools/eval_coco.py", "--detections", str(path), "--gt", str(ann), "--output-dir", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    ours = json.loads((tmp_path / "o" / "metrics.json").read_text())
    gt = COCO(str(ann))
    ev = COCOeval(gt, gt.loadRes(str(path)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for key, value in zip(STAT_KEYS, ev.stats):
        assert abs(ours[key] - value) < 1e-9, key


def test_bad_inputs_are_clean_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run_tool("tools/eval_coco.py", "--detections", str(bad), "--gt", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "bad.json" in result.stderr
    result = tool_in_process("tools/eval_coco.py")
    assert result.returncode == 2 and "--weights" in result.stderr


def test_weights_on_a_dataset_writes_everything(tmp_path):
    import torch

    from detector import checkpoint
    from detector.build import build_model
    from detector.config import Config, ModelConfig, to_dict
    from detector.data.synthetic import CATEGORIES

    data = tiny_dataset(tmp_path / "data", train=1, val=4)
    cfg = Config()
    cfg.model = ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=5)
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    checkpoint.save(
        ckpt, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg), "categories": CATEGORIES}
    )
    result = tool_in_process(
        "tools/eval_coco.py",
        "--weights",
        str(ckpt),
        "--data-root",
        str(data),
        "--workers",
        "0",
        "--output-dir",
        str(tmp_path / "o"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["model"]["backbone"] == "mobilenet_v3_small" and set(metrics["per_class"]) == {
        c["name"] for c in CATEGORIES
    }
    detections = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= {c["id"] for c in CATEGORIES}
    assert {d["image_id"] for d in detections} <= {1, 2, 3, 4}
