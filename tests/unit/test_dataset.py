import json

import cv2
import numpy as np
import pytest
import torch

from detector.data.dataset import CocoDetection
from detector.data.image_io import read_image
from detector.data.transforms import apply_transform, build_transform
from detector.errors import UserError


def _write(tmp_path, images, annotations, categories):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann


def test_category_mapping_crowd_clipping_and_empty_images(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    for name, shape in (("a.jpg", (50, 80, 3)), ("b.png", (40, 40, 3))):
        cv2.imwrite(str(tmp_path / "img" / name), np.full(shape, 128, np.uint8))
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 80, "height": 50},
        {"id": 11, "file_name": "b.png", "width": 40, "height": 40},
    ]
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 42, "bbox": [70, 10, 30, 20], "iscrowd": 0},  # clipped at x=80
        {"id": 2, "image_id": 10, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1},  # crowd
        {"id": 3, "image_id": 10, "category_id": 7, "bbox": [5, 5, 0, 10], "iscrowd": 0},  # zero width
        {"id": 4, "image_id": 10, "category_id": 7, "bbox": [200, 200, 10, 10], "iscrowd": 0},  # outside
        {"id": 5, "image_id": 99, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # unknown image
        {"id": 6, "image_id": 10, "category_id": 5, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # unknown category
    ]
    ann = _write(tmp_path, images, annotations, [{"id": 42, "name": "b"}, {"id": 7, "name": "a"}])
    ds = CocoDetection(ann, tmp_path / "img", build_transform((32, 32)))
    assert ds.categories == [{"id": 7, "name": "a"}, {"id": 42, "name": "b"}]
    assert len(ds) == 2  # the image without annotations stays
    assert sum(ds.report.counts.values()) == 4
    assert "annotation id 5" in " ".join(sum(ds.report.examples.values(), []))
    image, target = ds[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert target["labels"].tolist() == [2]  # category 42 -> label 2
    torch.testing.assert_close(target["boxes"], torch.tensor([[28.0, 6.4, 32.0, 19.2]]))
    assert target["crowd_boxes"].shape == (1, 4)
    assert ds[1][1]["boxes"].shape == (0, 4)


def test_decoding_grayscale_rgba_sixteen_bit_and_exif(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 7), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.full((5, 7, 4), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "d.png"), np.full((5, 7), 65535, np.uint16))
    for name in ("g.png", "rgba.png", "d.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    assert read_image(tmp_path / "d.png").max() == 255
    # EXIF orientation 6 (rotate 90 clockwise): a 4x8 stored image is shown 8x4; COCO's boxes refer to the
    # stored pixels, so it is read as stored unless asked.
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.zeros((4, 8, 3), np.uint8)
    stored[:, :4] = 255  # left half white
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif)
    as_stored = read_image(tmp_path / "r.jpg")
    assert as_stored.shape == (4, 8, 3) and as_stored[:, :4].mean() > 200 and as_stored[:, 4:].mean() < 50
    turned = read_image(tmp_path / "r.jpg", exif=True)
    assert turned.shape == (8, 4, 3) and turned[:4].mean() > 200  # the white half is now on top
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")


@pytest.mark.parametrize("steps", [["photometric", "zoom_out", "ssd_crop", "hflip"], ["iou_crop", "hflip"]])
def test_augmented_boxes_stay_valid_and_aligned(steps):
    transform = build_transform((96, 128), steps)
    rng = np.random.default_rng(0)
    for seed in range(60):
        h, w = rng.integers(20, 300, size=2)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        xy = rng.uniform(0, [w - 2, h - 2], size=(5, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, [w, h], size=(5, 2))], 1).clip(0, [w, h, w, h])
        labels = np.arange(1, 6)
        image_out, b, lab = apply_transform(transform, image, boxes.astype(np.float32), labels, seed)
        assert image_out.shape == (96, 128, 3)
        assert len(b) == len(lab) and set(lab.tolist()) <= set(labels.tolist())
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 128).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 96).all()
        assert ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) >= 1).all()
    first = apply_transform(transform, image, boxes.astype(np.float32), labels, 3)
    again = apply_transform(transform, image, boxes.astype(np.float32), labels, 3)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


def test_workers_that_live_across_epochs_see_each_epoch(tmp_path):
    """The training loader keeps its workers for the whole run (persistent_workers); set_epoch in the main
    process must still reach them: every epoch's augmented batches equal those of loading in the main process."""
    from detector.data.dataset import collate

    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(4):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 80, "height": 60})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 30], "iscrowd": 0})
    ann = _write(tmp_path, images, annotations, [{"id": 1, "name": "a"}])
    transform = build_transform((32, 32), ["photometric", "zoom_out", "ssd_crop", "hflip"])
    batches = {}
    for workers in (0, 1):
        ds = CocoDetection(ann, tmp_path / "img", transform)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate,
                                             persistent_workers=workers > 0)  # fmt: skip
        for epoch in range(3):
            ds.set_epoch(epoch)
            batches[workers, epoch] = next(iter(loader))[0]
    for epoch in range(3):
        assert torch.equal(batches[0, epoch], batches[1, epoch]), epoch
    assert not torch.equal(batches[1, 0], batches[1, 1])  # the epochs do draw differently
