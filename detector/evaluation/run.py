"""Evaluating a checkpoint on a COCO-format dataset, or scoring an existing results file, and writing the results.

Detections are COCO results records ({"image_id", "category_id" the dataset's id, "bbox": [x, y, w, h] in
original image pixels, "score"}). ``write_results`` writes into a folder:

- ``metrics.json``: the 12 COCO numbers (``AP`` ... ``ARl``), ``per_class`` {name: AP}, ``split`` (val2017,
  minival2014, or the annotation file) and, for a checkpoint, ``model`` (backbone, width, reduced_tail, layout,
  padding, resize: what tools/table6.py --map reads);
- ``detections.json``: the records (a test-dev submission file);
- ``pr_curve.png``: precision against recall at IoU 0.5 and 0.75 (when there were detections to score).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from detector.data.dataset import CocoDetection, eval_loader
from detector.errors import UserError
from detector.evaluation.coco_eval import evaluate, load_coco
from detector.evaluation.predict import predict_coco
from detector.evaluation.report import plot_precision_recall
from detector.inference.runner import Runner

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """``detections`` (COCO results records), ``metrics`` (``coco_eval.evaluate``'s dict, with COCOeval's
    ``precision`` (T, R, K, A, M) array when there were detections), ``model`` (the checkpoint's model
    settings, None for a results file) and ``split`` (what was evaluated: val2017, minival2014, or the
    annotation file)."""

    detections: list[dict]
    metrics: dict
    model: dict | None = None
    split: str | None = None


def evaluate_model(
    runner: Runner,
    dataset: CocoDetection,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = True,
) -> EvalResult:
    """Run ``runner`` (a checkpoint's model on any runtime, at the model's own score threshold) over ``dataset``
    (a plain-resize ``CocoDetection`` at the runner's input size, by the same resize) and score it against the
    ground truth of the dataset's annotation file."""
    ours = {c["id"]: c["name"].lower() for c in runner.categories}
    # a model may have more slots than the dataset has categories (COCO's 90 ids for its 80 categories)
    differ = [c for c in dataset.categories if ours.get(c["id"]) != c["name"].lower()]
    if differ:
        c = differ[0]
        log.warning("the dataset's categories differ from the checkpoint's (id %s is %r in the dataset, %r in the "
                    "checkpoint); results use the checkpoint's ids", c["id"], c["name"], ours.get(c["id"]))  # fmt: skip
    detections = predict_coco(runner, eval_loader(dataset, batch_size, workers), progress)
    return EvalResult(detections, evaluate(load_coco(dataset.ann_file), detections))


def evaluate_detections_file(detections_path: str | Path, gt_path: str | Path) -> EvalResult:
    """Score an existing COCO results JSON (a list of records) against the annotation file ``gt_path``."""
    gt = load_coco(gt_path)
    try:
        detections = json.loads(Path(detections_path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{detections_path}: cannot read detections: {exc}") from None
    if not isinstance(detections, list):
        raise UserError(f"{detections_path}: expected a JSON list of COCO results")
    return EvalResult(detections, evaluate(gt, detections))


def write_results(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Write detections.json, pr_curve.png (when there is a precision array) and metrics.json into ``out_dir``
    (created); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "detections.json"]
    written[0].write_text(json.dumps(result.detections))
    record = {k: v for k, v in result.metrics.items() if k != "precision"}
    if result.metrics.get("precision") is not None:
        written.append(plot_precision_recall(result.metrics["precision"], out / "pr_curve.png"))
    if result.split:
        record["split"] = result.split
    if result.model:
        record["model"] = result.model
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    return [out / "metrics.json", *written]
