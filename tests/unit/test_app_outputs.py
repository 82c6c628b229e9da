"""The JSON-lines record, the score and class selection of the API's Detector, and the output writers, on
fake detections."""

import json

import cv2
import numpy as np
import pytest

from detector.app.api import Detector, as_rgb
from detector.app.outputs import Outputs, inside
from detector.app.sources import Frame
from detector.errors import UserError
from detector.inference.runner import Runner
from detector.ssd.detections import Detections, LabelMap

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "triangle"}]
NAMES = [c["name"] for c in CATEGORIES]


def fake_detections(size: tuple[int, int] = (48, 64)) -> Detections:
    """Three detections as every runner returns them (boxes xyxy in frame pixels, labels 1-based)."""
    boxes = np.array([[1.234, 2.0, 30.5, 40.0], [5.0, 5.0, 9.0, 9.0], [0.0, 0.0, 63.999, 47.0]], np.float32)
    return LabelMap(CATEGORIES).detections(boxes, np.array([0.9123456, 0.2, 0.5], np.float32), [1, 2, 3], size)


class FakeRunner(Runner):
    """The same three detections for every frame, in that frame's size."""

    def __init__(self) -> None:
        super().__init__(CATEGORIES, (64, 64))

    def infer(self, batch):
        return batch

    def decode(self, outputs, sizes, min_score=0.0):  # the Detector filters again: its result does not depend on it
        return [fake_detections(size) for size in sizes]


def test_json_record_is_the_documented_contract():
    record = fake_detections().at("photos/a.jpg", 7).to_json()
    assert list(record) == ["source", "frame", "width", "height", "detections"]
    assert (record["source"], record["frame"], record["width"], record["height"]) == ("photos/a.jpg", 7, 64, 48)
    first = record["detections"][0]
    assert first == {"bbox": [1.23, 2.0, 30.5, 40.0], "score": 0.91235, "category_id": 1, "name": "circle"}
    assert [d["category_id"] for d in record["detections"]] == [1, 2, 5]
    json.dumps(record)  # plain Python types only


def test_select_keeps_every_field_aligned():
    kept = fake_detections().select(np.array([True, False, True]))
    assert kept.names == ["circle", "triangle"] and kept.category_ids.tolist() == [1, 5]
    assert kept.boxes.shape == (2, 4) and kept.scores.dtype == np.float32 and kept.labels.tolist() == [1, 3]
    assert len(fake_detections().select(np.zeros(3, bool))) == 0


def test_detector_applies_conf_and_classes_to_arrays_paths_and_lists(tmp_path):
    detector = Detector(FakeRunner(), conf=0.4, classes=["square", "triangle"])
    det = detector(np.zeros((10, 12, 3), np.uint8))
    assert det.names == ["triangle"] and det.image_size == (10, 12) and det.source == ""
    assert Detector(FakeRunner(), conf=0.3)(np.zeros((10, 12, 3), np.uint8)).names == ["circle", "triangle"]
    assert Detector(FakeRunner(), conf=0.0)(np.zeros((10, 12, 3), np.uint8)).names == NAMES
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    both = detector([tmp_path / "a.png", np.zeros((5, 6, 3), np.uint8)])
    assert [d.source for d in both] == [str(tmp_path / "a.png"), ""] and both[0].image_size == (20, 30)
    assert detector.times is detector.runner.times and detector.times.frames == 3
    with pytest.raises(UserError, match="unknown 'dog'; this model has: circle, square, triangle"):
        Detector(FakeRunner(), classes=["dog"])


def test_image_arrays_are_taken_in_every_common_form():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert as_rgb(rgb)[0] is rgb
    grey, _ = as_rgb(rgb[..., 0])
    assert grey.shape == (2, 3, 3) and (grey[..., 1] == rgb[..., 0]).all()
    assert as_rgb(rgb[..., :1])[0].shape == (2, 3, 3)
    assert (as_rgb(np.dstack([rgb, np.full((2, 3), 255, np.uint8)]))[0] == rgb).all()  # RGBA: alpha dropped
    for bad, message in ((rgb.astype(np.float32), "dtype float32"), (rgb[:, :, :2], r"shape \(2, 3, 2\)")):
        with pytest.raises(UserError, match=message):
            as_rgb(bad)


class ImageList:
    """The attributes of an image source that Outputs reads."""

    kind, fps, spec, name = "images", None, "in", "in"


def test_outputs_write_json_lines_and_annotated_images(tmp_path):
    out, lines = tmp_path / "out", tmp_path / "logs" / "d.jsonl"
    outputs = Outputs(ImageList(), out, lines)
    frame = Frame(np.full((48, 64, 3), 128, np.uint8), str(tmp_path / "src" / "a.png"), 0, "sub/a.png")
    assert outputs.write(frame, fake_detections(), fps=10.0)
    assert outputs.close() == [str(lines)]
    (record,) = [json.loads(line) for line in lines.read_text().splitlines()]
    assert record["width"] == 64 and len(record["detections"]) == 3
    annotated = cv2.imread(str(out / "sub" / "a.png"))
    assert annotated.shape == (48, 64, 3) and (annotated != 128).any()  # boxes were drawn


def test_output_paths_cannot_leave_the_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "out", "a/b.jpg") == tmp_path / "out" / "a" / "b.jpg"
    with pytest.raises(UserError, match="outside --output-dir"):
        inside(tmp_path / "out", "link/x.jpg")
    source_image = tmp_path / "out" / "x.png"
    outputs = Outputs(ImageList(), tmp_path / "out")
    with pytest.raises(UserError, match="would overwrite the source image"):
        outputs.write(Frame(np.zeros((8, 8, 3), np.uint8), str(source_image), 0, "x.png"), fake_detections(), 1.0)
    outputs.close()
