"""Small generated datasets for the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

from detector.data.synthetic import generate


def tiny_dataset(root: Path, train: int = 8, val: int = 4) -> Path:
    return generate(root, num_train=train, num_val=val, seed=1, size_range=(64, 96))


TINY_TRAIN = [
    "model.backbone=mobilenet_v3_small",
    "model.image_size=[64, 64]",
    "model.num_classes=5",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.warmup_iters=2",
    "train.epochs=2",
    "train.channels_last=false",
    "data.workers=0",
    "data.augment=[hflip, ssd_crop]",
    "data.class_slots=contiguous",
    "postprocess.score_thresh=0.01",
]


def hostile_dataset(root: Path) -> tuple[Path, Path]:
    """A COCO-format dataset with every fault users' tools produce, beside good images.

    Returns (annotation file, image folder).
    """
    import json

    import cv2
    import numpy as np
    from PIL import Image

    from detector.data.synthetic import CATEGORIES, render_image

    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    images, anns = [], []

    def add_image(name: str, w: int, h: int) -> int:
        images.append({"id": len(images) + 1, "file_name": name, "width": w, "height": h})
        return len(images)

    def add_ann(image_id: int, bbox: list, category: int = 3) -> None:
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": bbox,
                "area": 1.0,
                "iscrowd": 0,
            }
        )

    for i in range(8):  # good images with good boxes
        img, objects = render_image(rng, 80, 96)
        cv2.imwrite(str(images_dir / f"good{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        image_id = add_image(f"good{i}.jpg", 96, 80)
        for cls, (x1, y1, x2, y2) in objects:
            add_ann(image_id, [x1, y1, x2 - x1, y2 - y1], CATEGORIES[cls]["id"])
    good = (images_dir / "good0.jpg").read_bytes()
    (images_dir / "truncated.jpg").write_bytes(good[: len(good) // 2])
    add_ann(add_image("truncated.jpg", 96, 80), [10, 10, 20, 20])
    (images_dir / "empty.jpg").write_bytes(b"")
    add_ann(add_image("empty.jpg", 96, 80), [10, 10, 20, 20])
    add_ann(add_image("missing.jpg", 96, 80), [10, 10, 20, 20])
    cv2.imwrite(str(images_dir / "png_named.png"), np.full((60, 70, 3), 90, np.uint8))
    (images_dir / "png_named.png").rename(images_dir / "really_png.jpg")
    add_ann(add_image("really_png.jpg", 70, 60), [5, 5, 30, 30])
    cv2.imwrite(str(images_dir / "deep.png"), (rng.random((50, 60, 3)) * 65535).astype(np.uint16))
    add_ann(add_image("deep.png", 60, 50), [5, 5, 30, 30], 7)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).convert("P").save(images_dir / "palette.png")
    add_ann(add_image("palette.png", 40, 40), [2, 2, 20, 20], 11)
    cv2.imwrite(str(images_dir / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    add_ann(add_image("tiny.png", 1, 1), [0, 0, 1, 1])
    cv2.imwrite(str(images_dir / "strip.jpg"), rng.integers(0, 255, (40, 5000, 3), dtype=np.uint8))
    add_ann(add_image("strip.jpg", 5000, 40), [100, 5, 400, 30], 12)
    bad_boxes = add_image("good0.jpg", 96, 80)  # a second record of a good file, carrying the bad boxes
    add_ann(bad_boxes, [10, 10, -5, 20])  # negative width
    add_ann(bad_boxes, [float("nan"), 10, 5, 5])  # NaN coordinate
    add_ann(bad_boxes, [500, 500, 10, 10])  # entirely outside the image
    add_ann(9999, [1, 1, 5, 5])  # image id that does not exist
    add_ann(bad_boxes, [1, 1, 5, 5], category=404)  # category not in categories
    ann_file = root / "annotations.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return ann_file, images_dir
