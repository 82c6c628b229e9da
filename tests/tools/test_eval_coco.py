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


def _with_minival_ids(data, train_ids, val_ids):
    """Renumber the images of a COCO 2017 layout: the first of each split get the given (minival) ids, the
    others ids outside minival; returns {split: [ids in order]}."""
    result = {}
    for split, wanted in (("train", train_ids), ("val", val_ids)):
        path = data / "annotations" / f"instances_{split}2017.json"
        ann = json.loads(path.read_text())
        new_ids = list(wanted) + [900_000_000 + 100 * len(wanted) + i for i in range(len(ann["images"]) - len(wanted))]
        if split == "val":
            new_ids = [i + 50 if i >= 900_000_000 else i for i in new_ids]
        renumber = {im["id"]: new for im, new in zip(ann["images"], new_ids)}
        for im in ann["images"]:
            im["id"] = renumber[im["id"]]
        for a in ann["annotations"]:
            a["image_id"] = renumber[a["image_id"]]
        path.write_text(json.dumps(ann))
        result[split] = new_ids
    return result


def _tiny_checkpoint(path, num_classes=5):
    import torch

    from detector import checkpoint
    from detector.build import build_model
    from detector.config import Config, ModelConfig, to_dict
    from detector.data.synthetic import CATEGORIES

    cfg = Config()
    cfg.model = ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=num_classes)
    torch.manual_seed(0)
    checkpoint.save(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg),
                           "categories": CATEGORIES})  # fmt: skip
    return path


def test_minival2014_scores_exactly_the_minival_images_present_from_both_folders(tmp_path):
    from detector.data.minival import minival_dataset_files, minival_ids

    ids = minival_ids()
    assert len(ids) == len(set(ids)) == 8059 and ids[:2] == [25096, 251824]
    data = tiny_dataset(tmp_path / "data", train=5, val=4)
    split_ids = _with_minival_ids(data, train_ids=ids[:3], val_ids=ids[100:102])
    minival_present = set(ids[:3]) | set(ids[100:102])
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    args = ["--weights", str(ckpt), "--data-root", str(data), "--split", "minival2014", "--workers", "0"]
    result = tool_in_process("tools/eval_coco.py", *args, "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"8,054 of the 8,059 minival images are missing (first ids: {ids[3]}, {ids[4]}, " in result.stderr
    assert "--allow-partial" in result.stderr
    result = tool_in_process("tools/eval_coco.py", *args, "--allow-partial", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "minival2014: 5 of the 8,059 images (3 in train2017/, 2 in val2017/)" in result.stdout
    assert "evaluating minival2014 (partial): 5 images" in result.stdout
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["split"] == "minival2014 (partial)"
    detections = json.loads((tmp_path / "o" / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == minival_present
    merged = json.loads((tmp_path / "o" / "instances_minival2014_partial.json").read_text())
    assert {im["id"] for im in merged["images"]} == minival_present
    assert sorted(im["file_name"].split("/")[0] for im in merged["images"]) == ["train2017"] * 3 + ["val2017"] * 2
    assert {a["image_id"] for a in merged["annotations"]} <= minival_present
    # the images outside minival, in either folder, are the others
    assert not minival_present & (set(split_ids["train"][3:]) | set(split_ids["val"][2:]))
    # a minival image whose file is gone is missing too
    gone = next(im for im in merged["images"] if im["file_name"].startswith("val2017/"))
    (data / gone["file_name"]).unlink()
    found = minival_dataset_files(data, tmp_path / "o", allow_partial=True)
    assert found.describe() == "minival2014: 4 of the 8,059 images (3 in train2017/, 1 in val2017/)"
    assert gone["id"] in found.missing and len(found.missing) == 8055


def test_report_overlap_counts_val2017_in_tf_training(tmp_path):
    from detector.data.minival import minival_ids

    data = tiny_dataset(tmp_path / "data", train=1, val=6)
    _with_minival_ids(data, train_ids=[], val_ids=minival_ids()[7:9])
    result = tool_in_process("tools/eval_coco.py", "--data-root", str(data), "--report-overlap")
    assert result.returncode == 0, result.stderr
    assert "val2017: 6 images; 2 in TF's minival, 4 (66.7%) in the TF zoo models' training data" in result.stdout
    result = tool_in_process("tools/eval_coco.py", "--split", "minival2014", "--weights", "x.pt")
    assert result.returncode == 2 and "--split minival2014 needs --data-root" in result.stderr
