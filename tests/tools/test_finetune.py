"""Fine-tuning through tools/train_coco.py --init: class rows follow the category names."""

import json

import numpy as np
import torch

from detector import checkpoint
from detector.weights.resolve import load_model

from ..conftest import tool_in_process
from ..data_fixtures import TINY_TRAIN, tiny_dataset


def keep_categories(data, names: list[str], out) -> None:
    """A copy of ``data``'s annotation files with only the categories ``names`` (others' boxes removed)."""
    for split in ("train", "val"):
        ann = json.loads((data / "annotations" / f"instances_{split}2017.json").read_text())
        kept = {c["id"] for c in ann["categories"] if c["name"] in names}
        ann["categories"] = [c for c in ann["categories"] if c["id"] in kept]
        ann["annotations"] = [a for a in ann["annotations"] if a["category_id"] in kept]
        (out / f"{split}.json").write_text(json.dumps(ann))


def _rows(det: dict, mask: torch.Tensor) -> torch.Tensor:
    """(D, 5) [score, x1, y1, x2, y2] rows of the masked detections, in lexicographic order."""
    rows = torch.cat([det["scores"][mask][:, None], det["boxes"][mask]], 1).double()
    order = np.lexsort(rows.numpy().T[::-1])
    return rows[torch.from_numpy(order)]


def _train(data, json_dir, out, *extra, sets=()):
    return tool_in_process(
        "tools/train_coco.py",
        "--train-json", str(json_dir / "train.json"), "--train-images", str(data / "train2017"),
        "--output-dir", str(out), "--no-val",
        "--set", *TINY_TRAIN, "model.num_classes=3", "train.epochs=1", *sets,
        *extra,
    )  # fmt: skip


def test_fine_tuning_keeps_shared_classes_and_swaps_the_others(tmp_path):
    data = tiny_dataset(tmp_path / "data", train=8, val=1)
    (tmp_path / "abc").mkdir()
    (tmp_path / "bcd").mkdir()
    keep_categories(data, ["circle", "square", "triangle"], tmp_path / "abc")  # a, b, c
    keep_categories(data, ["square", "triangle", "cross"], tmp_path / "bcd")  # b, c, d
    first = _train(data, tmp_path / "abc", tmp_path / "run_abc")
    assert first.returncode == 0, first.stderr[-3000:]
    # Learning rate 0 and BatchNorm frozen: fine-tuning changes nothing but the class rows.
    second = _train(data, tmp_path / "bcd", tmp_path / "run_bcd", "--init", str(tmp_path / "run_abc" / "last.pt"),
                    sets=["train.lr=0.0", "train.freeze_bn=true"])  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "classes: 2 carried over by name (square, triangle), 1 new (cross), 1 dropped (circle)" in second.stderr
    assert checkpoint.load(tmp_path / "run_bcd" / "last.pt")["config"]["train"]["init"].endswith("last.pt")

    old, new = load_model(tmp_path / "run_abc" / "last.pt"), load_model(tmp_path / "run_bcd" / "last.pt")
    old_model, old_post, old_cats = old.model, old.post, old.categories
    new_model, new_post, new_cats = new.model, new.post, new.categories
    assert [c["name"] for c in old_cats] == ["circle", "square", "triangle"]
    assert [c["name"] for c in new_cats] == ["square", "triangle", "cross"]
    for post in (old_post, new_post):
        post.max_detections = 10_000  # per-class results, without the cut across classes
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        old_box, old_logits = old_model(images)
        new_box, new_logits = new_model(images)
    torch.testing.assert_close(new_box, old_box, rtol=0, atol=0)
    torch.testing.assert_close(new_logits[..., [0, 1, 2]], old_logits[..., [0, 2, 3]], rtol=0, atol=0)
    assert not torch.allclose(new_logits[..., 3], old_logits[..., 1])  # cross is not circle
    old_dets = old_post(old_box, old_logits, [(64, 64)] * 3)
    new_dets = new_post(new_box, new_logits, [(64, 64)] * 3)
    for old, new in zip(old_dets, new_dets):
        for old_label, new_label in ((2, 1), (3, 2)):  # square, triangle: sigmoid scores are per class
            o, n = old["labels"] == old_label, new["labels"] == new_label
            assert o.sum() > 0
            # as sets of (score, box): detections of equal score may come in either order
            torch.testing.assert_close(_rows(new, n), _rows(old, o), rtol=0, atol=0)
