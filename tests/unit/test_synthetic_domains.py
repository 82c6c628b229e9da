"""The synthetic generator's second domain (shape kinds, background styles) and the fine-tuning benchmark's logic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data.synthetic import CATEGORIES, categories, generate, render_image
from detector.data.synthetic_shapes import BACKGROUNDS, KIND_IDS, background, draw

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_B = ["circle", "square", "triangle", "star", "hexagon", "arrow"]

# Computed with the generator as it was before the domain options existed: the default output must not change.
DEMO_CATEGORIES = [
    {"id": 3, "name": "circle"},
    {"id": 7, "name": "square"},
    {"id": 11, "name": "triangle"},
    {"id": 12, "name": "cross"},
    {"id": 20, "name": "ring"},
]
DEMO_JSON_SHA256 = {
    "train2017": "23e322e42e6d56f05e600742e4af490c303453b567b7ad2b7900d206ba45ae55",
    "val2017": "f11d648dfc838634e38dea93a3f2717763c6d4b4f753fcc38021b2896b9eb2d3",
}
DEMO_PIXELS_SHA256 = "abdf8109bff64c375bf3aa79943fbc658287d6b214dbb31e5f7dfa57c0865c5f"
DEMO_OBJECTS = [
    [(0, (1, 36, 34, 75))],
    [(3, (48, 20, 97, 58)), (0, (9, 42, 24, 57)), (0, (58, 4, 74, 26))],
    [(3, (73, 33, 98, 54)), (0, (92, 14, 107, 31)), (4, (35, 78, 49, 89))],
]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_default_generation_unchanged(tmp_path):
    assert CATEGORIES == DEMO_CATEGORIES and categories() == DEMO_CATEGORIES
    generate(tmp_path, 3, 2, seed=1, size_range=(64, 96))
    for split, digest in DEMO_JSON_SHA256.items():
        assert hashlib.sha256((tmp_path / "annotations" / f"instances_{split}.json").read_bytes()).hexdigest() == digest
    rng, h, objects = np.random.default_rng(123), hashlib.sha256(), []
    for _ in range(3):
        img, objs = render_image(rng, 90, 120)
        h.update(img.tobytes())
        objects.append(objs)
    assert objects == DEMO_OBJECTS
    assert h.hexdigest() == DEMO_PIXELS_SHA256


def test_second_domain_categories_and_boxes(tmp_path):
    generate(tmp_path, 12, 3, seed=2, size_range=(64, 112), classes=DOMAIN_B, background="tiles")
    for split in ("train2017", "val2017"):
        data = _load(tmp_path / "annotations" / f"instances_{split}.json")
        assert data["categories"] == sorted(({"id": KIND_IDS[n], "name": n} for n in DOMAIN_B), key=lambda c: c["id"])
        assert {c["name"]: c["id"] for c in data["categories"]}["star"] == 16
        sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            width, height = sizes[ann["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
        for im in data["images"]:
            assert cv2.imread(str(tmp_path / split / im["file_name"])).shape[:2] == (im["height"], im["width"])
    used = {a["category_id"] for a in _load(tmp_path / "annotations" / "instances_train2017.json")["annotations"]}
    assert {16, 23, 27} & used, "no new kind drawn in 12 images"
    assert used <= {KIND_IDS[n] for n in DOMAIN_B}


def test_shared_kinds_keep_demo_ids_and_order_does_not_matter():
    assert categories(["triangle", "star", "circle"]) == categories(["circle", "star", "triangle"])
    demo_ids = {c["name"]: c["id"] for c in CATEGORIES}
    assert all(c["id"] == demo_ids[c["name"]] for c in categories(DOMAIN_B) if c["name"] in demo_ids)
    assert len(set(KIND_IDS.values())) == len(KIND_IDS)
    with pytest.raises(ValueError, match="unknown"):
        categories(["circle", "blob"])
    with pytest.raises(ValueError):
        categories(["circle", "circle"])
    with pytest.raises(ValueError):
        background(np.random.default_rng(0), 8, 8, "marble")


@pytest.mark.parametrize("kind", sorted(set(KIND_IDS) - {c["name"] for c in CATEGORIES}))
def test_new_kinds_fill_their_box(kind):
    img = np.zeros((80, 100, 3), np.uint8)
    draw(img, kind, (10, 20, 70, 60), (255, 255, 255))
    ys, xs = np.nonzero(img[..., 0] > 127)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (10, 20, 70, 60)  # tight box, nothing outside


def _edge_density(img: np.ndarray) -> float:
    g = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (3, 3), 0).astype(np.float32)
    return float((np.abs(np.diff(g, axis=1)) > 8).mean() + (np.abs(np.diff(g, axis=0)) > 8).mean())


def test_tiles_background_differs_from_demo():
    assert BACKGROUNDS == ("demo", "tiles")
    density = {}
    for style in BACKGROUNDS:
        rng = np.random.default_rng(0)
        density[style] = np.mean([_edge_density(background(rng, 96, 128, style)) for _ in range(20)])
    assert density["tiles"] > 2.5 * density["demo"]  # straight tile edges everywhere, against smooth noise


def test_second_domain_deterministic_from_seed():
    def images(seed: int) -> list[tuple]:
        rng = np.random.default_rng(seed)
        return [render_image(rng, 72, 96, classes=DOMAIN_B, background="tiles") for _ in range(3)]

    a, b, c = images(4), images(4), images(5)
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_benchmark_log_table_and_goal(tmp_path):
    from benchmarks import finetune as tool

    log = tmp_path / "log.jsonl"
    lines = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "AP": 0.1, "AP50": 0.3}, {"epoch": 3, "AP": 0.2, "AP50": 0.5}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    scratch = tool.read_log(log)
    assert scratch == {2: {"AP": 0.1, "AP50": 0.3}, 3: {"AP": 0.2, "AP50": 0.5}}
    finetune = {1: {"AP": 0.25, "AP50": 0.55}, 2: {"AP": 0.3, "AP50": 0.6}, 3: {"AP": 0.35, "AP50": 0.7}}
    result = tool.compare(scratch, finetune, 3)
    assert result["scratch_final_AP50"] == 0.5 and result["finetune_first_epoch"] == 1
    assert result["epochs"][0] == {
        "epoch": 1,
        "scratch_AP": None,
        "scratch_AP50": None,
        "finetune_AP": 0.25,
        "finetune_AP50": 0.55,
    }
    target = result["targets"]["finetune_epochs_to_scratch_final_AP50_fraction"]
    assert target["met"] and target["value"] == pytest.approx(1 / 3, abs=1e-3)
    text = tool.table_text(result, 3)
    assert "at epoch 1 of 3" in text and "met" in text and "     -" in text
    late = tool.compare(scratch, {2: {"AP": 0.2, "AP50": 0.5}, 3: {"AP": 0.2, "AP50": 0.6}}, 3)
    assert late["finetune_first_epoch"] == 2
    assert not late["targets"]["finetune_epochs_to_scratch_final_AP50_fraction"]["met"]
    never = tool.compare(scratch, {3: {"AP": 0.1, "AP50": 0.4}}, 3)
    assert never["finetune_first_epoch"] is None and "never" in tool.table_text(never, 3)
    json.dumps(never)  # JSON-serialisable
