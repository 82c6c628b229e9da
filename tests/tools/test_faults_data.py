"""Bad data: training starts, reports every problem with its file and record, skips it and finishes."""

import json

import pytest

from ..conftest import run_tool, tool_in_process
from ..data_fixtures import TINY_TRAIN, hostile_dataset


def test_check_dataset_lists_every_problem(tmp_path):
    ann, images = hostile_dataset(tmp_path)
    result = tool_in_process("tools/check_dataset.py", "--json", str(ann), "--images", str(images))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    for text in (
        "truncated JPEG",
        "zero-byte image file",
        "missing image file",
        "zero or negative width",
        "NaN",
        "outside the image",
        "image id not in 'images'",
        "category id not in 'categories'",
    ):
        assert text in out, text
    assert "truncated.jpg (image id 9" in out and "annotation id" in out
    summary = [line for line in out.splitlines() if line.startswith("summary:")][0]
    assert "8 problems" in summary or "problems" in summary
    # the PNG named .jpg, 16-bit and palette PNGs, 1x1 and 5000x40 images are usable: not reported
    for name in ("really_png.jpg", "deep.png", "palette.png", "tiny.png", "strip.jpg"):
        assert name not in out, name


def test_training_on_hostile_data_finishes(tmp_path):
    ann, images = hostile_dataset(tmp_path / "data")
    result = tool_in_process(
        "tools/train_coco.py",
        "--train-json",
        str(ann),
        "--train-images",
        str(images),
        "--val-json",
        str(ann),
        "--val-images",
        str(images),
        "--output-dir",
        str(tmp_path / "run"),
        "--set",
        *TINY_TRAIN,
        "train.epochs=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "problems in all" in result.stderr
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["epoch"] == 1 and "AP" in log[-1]


@pytest.mark.parametrize(
    "content,message,run",
    [
        ('{"images": [], "annotations": [', "not valid JSON", run_tool),  # one case in new processes
        ('{"annotations": []}', "no 'images' list", tool_in_process),
        ('{"images": []}', "no 'annotations' list", tool_in_process),
        ("[1, 2]", "top level", tool_in_process),
    ],
)
def test_malformed_annotation_file_is_one_line(tmp_path, content, message, run):
    ann = tmp_path / "broken.json"
    ann.write_text(content)
    (tmp_path / "img").mkdir()
    for tool in (
        ["tools/check_dataset.py", "--json", str(ann), "--images", str(tmp_path / "img")],
        [
            "tools/train_coco.py",
            "--train-json",
            str(ann),
            "--train-images",
            str(tmp_path / "img"),
            "--no-val",
            "--output-dir",
            str(tmp_path / "run"),
        ],
    ):
        result = run(*tool)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("INFO ")]
        assert len(lines) == 1 and "broken.json" in lines[0] and message in lines[0], lines
