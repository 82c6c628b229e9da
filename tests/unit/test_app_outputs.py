"""The JSON-lines record, the class filter and score selection, and the output writers, on fake detections."""

import json

import cv2
import numpy as np
import pytest

from detector.app.frame_detector import FrameDetector, class_filter, select
from detector.app.outputs import Outputs, inside, json_record
from detector.app.sources import Frame
from detector.deploy.torch_runtime import StageTimes
from detector.errors import UserError

NAMES = ["circle", "square", "triangle"]


def fake_detections() -> dict:
    """Three detections as every backend returns them (boxes xyxy in frame pixels, labels 1-based)."""
    return {
        "boxes": np.array([[1.234, 2.0, 30.5, 40.0], [5.0, 5.0, 9.0, 9.0], [0.0, 0.0, 63.999, 47.0]], np.float32),
        "scores": np.array([0.9123456, 0.2, 0.5], np.float32),
        "labels": np.array([1, 2, 3], np.int64),
        "category_ids": np.array([1, 2, 5], np.int64),
        "names": ["circle", "square", "triangle"],
    }


class FakeBackend:
    """Stands in for Detector / OnnxDetector: the same detections for every frame."""

    names = NAMES

    def __init__(self) -> None:
        self.times = StageTimes()

    def __call__(self, frames: list[np.ndarray]) -> list[dict]:
        return [fake_detections() for _ in frames]


def test_json_record_is_the_documented_contract():
    frame = Frame(np.zeros((48, 64, 3), np.uint8), "photos/a.jpg", 7, "a.jpg")
    record = json_record(frame, fake_detections())
    assert list(record) == ["source", "frame", "width", "height", "detections"]
    assert (record["source"], record["frame"], record["width"], record["height"]) == ("photos/a.jpg", 7, 64, 48)
    first = record["detections"][0]
    assert first == {"bbox": [1.23, 2.0, 30.5, 40.0], "score": 0.91235, "category_id": 1, "name": "circle"}
    assert [d["category_id"] for d in record["detections"]] == [1, 2, 5]
    json.dumps(record)  # plain Python types only


def test_class_filter_and_select():
    assert class_filter(NAMES, None) is None
    mask = class_filter(NAMES, ["circle", "triangle"])
    assert mask.tolist() == [False, True, False, True]  # index 0 is the background label
    with pytest.raises(UserError, match="unknown 'dog'; this model has: circle, square, triangle"):
        class_filter(NAMES, ["dog"])
    kept = select(fake_detections(), 0.3, mask)
    assert kept["names"] == ["circle", "triangle"] and kept["category_ids"].tolist() == [1, 5]
    assert kept["boxes"].shape == (2, 4) and kept["scores"].dtype == np.float32
    assert select(fake_detections(), 0.0, None)["names"] == NAMES


def test_frame_detector_applies_conf_and_classes():
    detector = FrameDetector(FakeBackend(), conf=0.4, classes=["square", "triangle"])
    det = detector(np.zeros((10, 10, 3), np.uint8))
    assert det["names"] == ["triangle"] and detector.times is detector.detector.times
    with pytest.raises(UserError):
        FrameDetector(FakeBackend(), classes=["dog"])


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
