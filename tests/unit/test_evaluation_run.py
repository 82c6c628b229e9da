"""Checkpoint evaluation and results files in-process, and a detector's COCO accuracy."""

import json

import numpy as np
import pytest

from detector import build
from detector.config import DataConfig
from detector.data.image_io import read_image
from detector.errors import UserError
from detector.evaluation.coco_eval import STAT_KEYS, evaluate, load_coco
from detector.evaluation.detector_accuracy import accuracy_lines, coco_accuracy
from detector.evaluation.run import EvalResult, evaluate_detections_file, evaluate_model, write_results
from detector.inference.runner import TorchRunner
from detector.ssd.detections import Detections
from detector.weights.resolve import load_model

from ..data_fixtures import tiny_dataset
from .tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data"), train=1, val=3)


def gt_as_detections(ann) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in json.loads(ann.read_text())["annotations"]
    ]


def test_results_file_scored_and_written(data, tmp_path):
    ann = data / "annotations" / "instances_val2017.json"
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(gt_as_detections(ann)))
    result = evaluate_detections_file(dets, ann)
    assert result.metrics["AP"] == pytest.approx(1.0) and result.model is None
    written = write_results(result, tmp_path / "out")
    assert [p.name for p in written] == ["metrics.json", "detections.json", "pr_curve.png"]
    metrics = json.loads(written[0].read_text())
    assert set(metrics) == set(STAT_KEYS) | {"per_class"}  # the precision array stays out
    assert "precision" in result.metrics  # and is not taken from the result
    dets.write_text("{}")
    with pytest.raises(UserError, match="expected a JSON list"):
        evaluate_detections_file(dets, ann)


def test_no_detections_writes_no_curve(tmp_path, data):
    ann = data / "annotations" / "instances_val2017.json"
    result = EvalResult([], evaluate(load_coco(ann), []))
    assert [p.name for p in write_results(result, tmp_path)] == ["metrics.json", "detections.json"]


def test_checkpoint_on_a_dataset(data, tmp_path, caplog):
    data_cfg = DataConfig(data_root=str(data))
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pt")
    loaded = load_model(ckpt)
    dataset = build.build_eval_dataset(loaded.config, data_cfg)
    runner = TorchRunner(loaded.model, loaded.post, loaded.categories)
    result = evaluate_model(runner, dataset, 2, 0, progress=False)
    result.model = {"backbone": loaded.config.model.backbone}
    assert result.detections and {d["image_id"] for d in result.detections} <= {1, 2, 3}
    assert set(result.metrics) >= set(STAT_KEYS)
    assert "categories differ from the checkpoint's (id 3 is" in caplog.text  # the dataset has ids 3, 7, 11, 12, 20
    metrics = json.loads(write_results(result, tmp_path / "out")[0].read_text())
    assert metrics["model"]["backbone"] == "mobilenet_v3_small"
    with pytest.raises(UserError, match="no val data"):
        build.build_eval_dataset(loaded.config, DataConfig())


def test_coco_accuracy_of_a_perfect_detector(data):
    ann, images = data / "annotations" / "instances_val2017.json", data / "val2017"
    coco = load_coco(ann)
    by_pixels = {}
    for info in coco.loadImgs(coco.getImgIds()):  # the detector recognises each image by its pixels
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]]))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
        key = read_image(images / info["file_name"]).tobytes()
        ids = np.array([a["category_id"] for a in anns], np.int64)
        by_pixels[key] = Detections(boxes.reshape(-1, 4), np.ones(len(anns), np.float32), ids, ids)

    row = coco_accuracy(lambda frames: [by_pixels[f.tobytes()] for f in frames], ann, images)
    assert row == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0), "images": 3}
    lines = accuracy_lines({"fp32": row}, ann)
    assert lines[0] == f"accuracy on {ann} (3 images):" and lines[2].split() == ["fp32", "1.0000", "1.0000"]
