"""Named weights through the tools: detect.py's default COCO model, names in eval and export, offline errors.

The default model's file is made here (torchvision's architecture, random weights) and put in a hub cache
under torchvision's file name; the in-process runs let the catalog trust that file's hash.
"""

import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from detector.weights import catalog, hub
from detector.weights.torchvision_ssdlite import coco_categories

from ..conftest import ROOT, tool_in_process
from ..data_fixtures import tiny_dataset
from ..unit.test_downloads import server  # noqa: F401 - the fixture
from .test_convert import _random_torchvision_detector


@pytest.fixture
def coco_cache(tmp_path, monkeypatch):
    """A hub cache holding a torchvision-coco file made here; downloads forbidden."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(hub.OFFLINE_VARIABLE, "1")
    entry = catalog.CATALOG["torchvision-coco"]
    path = hub.cached_path(entry)
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(_random_torchvision_detector().state_dict(), path)
    monkeypatch.setitem(catalog.CATALOG, entry.name, dataclasses.replace(entry, sha256=hub.sha256_of(path)))
    return path


def run_in_process(tool: str, *args: str) -> int:
    result = tool_in_process(tool, *args)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode


def test_detect_without_weights_runs_the_default_coco_model(coco_cache, tmp_path):
    image = tmp_path / "street.jpg"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), rng.integers(0, 255, (240, 360, 3), dtype=np.uint8))
    out = tmp_path / "dets.jsonl"
    result = tool_in_process("tools/detect.py", str(image), "--conf", "0.0", "--save-json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no --weights: the default COCO model, torchvision-coco" in result.stderr
    record = json.loads(out.read_text().splitlines()[0])
    names = {c["name"] for c in coco_categories()}
    assert record["detections"] and {d["name"] for d in record["detections"]} <= names
    assert all(1 <= d["category_id"] <= 90 for d in record["detections"])


def test_eval_and_export_take_names(coco_cache, tmp_path, monkeypatch):
    data = tiny_dataset(tmp_path / "data", train=1, val=2)
    out = str(tmp_path / "eval")
    code = run_in_process("tools/eval_coco.py", "--weights", "torchvision-coco", "--data-root", str(data),
                          "--output-dir", out, "--workers", "0")  # fmt: skip
    assert code == 0 and "AP" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    onnx_file = tmp_path / "coco.onnx"
    code = run_in_process("tools/export.py", "--weights", "torchvision-coco", "--out", str(onnx_file),
                          )  # fmt: skip
    assert code == 0 and onnx_file.stat().st_size > 1_000_000


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty hub cache under tmp_path, downloads forbidden."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(hub.OFFLINE_VARIABLE, "1")


def test_offline_without_the_file_is_one_line_naming_file_url_and_folder(tmp_path, offline):
    entry = catalog.CATALOG["torchvision-coco"]
    image = tmp_path / "any.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = tool_in_process("tools/detect.py", str(image))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert entry.filename in error[0] and entry.url in error[0] and str(folder) in error[0]


def test_a_wrong_file_under_the_name_is_refused(tmp_path, offline):
    entry = catalog.CATALOG["imagenet-small"]
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / entry.filename).write_bytes(b"\0" * 1000)
    data = tiny_dataset(tmp_path / "data", train=4, val=1)
    run = str(tmp_path / "run")
    recipe = str(ROOT / "configs" / "synthetic_demo.yaml")
    result = tool_in_process("tools/train_coco.py", "--config", recipe, "--data-root", str(data), "--init",
                             "imagenet-small", "--output-dir", run, "--no-val")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(folder / entry.filename) in result.stderr and entry.sha256 in result.stderr


def test_train_without_arguments_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/coco here
    result = tool_in_process("tools/train_coco.py")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    for part in ("data/coco/annotations/instances_train2017.json", "train2017/", "val2017/", "--data-root",
                 "--train-json"):  # fmt: skip
        assert part in error, part
    assert "table6_v3_large_reduced_paper.yaml" in result.stderr  # the recipe it chose


def test_the_paper_model_from_the_zoo_archive_through_detect_eval_and_export(tmp_path, monkeypatch):
    """paper-v3-small-coco from a zoo archive made here (TF's graph, random weights): detect.py on a photograph,
    eval_coco.py, export.py to ONNX and int8, each with the parity checks export.py makes."""
    from importlib.resources import files

    from ..tf_frozen_graph import frozen_graph, write_zoo_tarball

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(hub.OFFLINE_VARIABLE, "1")
    entry = catalog.CATALOG["paper-v3-small-coco"]
    hub.cached_path(entry).parent.mkdir(parents=True)
    write_zoo_tarball(hub.cached_path(entry), "ssd_mobilenet_v3_small_coco_2020_01_14", frozen_graph("small")[0])
    photo = str(files("skimage") / "data" / "astronaut.png")
    out = tmp_path / "dets.jsonl"
    code = run_in_process("tools/detect.py", photo, "--weights", entry.name, "--conf", "0.0", "--save-json",
                          str(out))  # fmt: skip
    record = json.loads(out.read_text().splitlines()[0])
    assert code == 0 and len(record["detections"]) == 100  # TF's 100 per image at score 1e-8
    archive = hub.cached_path(entry)  # no published hash: the first archive that converted is trusted from now on
    first = hub.sha256_of(archive)
    assert archive.with_name(archive.name + ".sha256").read_text().split()[0] == first
    data = tiny_dataset(tmp_path / "data", train=1, val=2)
    code = run_in_process("tools/eval_coco.py", "--weights", entry.name, "--data-root", str(data), "--output-dir",
                          str(tmp_path / "eval"), "--workers", "0")  # fmt: skip
    assert code == 0 and "AP" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for extra in ([], ["--int8", "--calib", str(data / "val2017"), "--calib-count", "2"]):
        onnx_file = tmp_path / f"paper{len(extra)}.onnx"
        code = run_in_process("tools/export.py", "--weights", entry.name, "--out", str(onnx_file), *extra,
                              )  # fmt: skip
        assert code == 0 and onnx_file.stat().st_size > 1_000_000
    other = tmp_path / "other.tar.gz"  # another archive that would convert, swapped in under the name
    write_zoo_tarball(other, "ssd_mobilenet_v3_small_coco_2020_01_14", frozen_graph("small", seed=1)[0])
    other.replace(archive)
    result = tool_in_process("tools/detect.py", photo, "--weights", entry.name)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"its SHA-256 is {hub.sha256_of(archive)}, but the copy first used here had {first}" in result.stderr


def test_a_team_name_downloads_once_and_a_truncated_body_leaves_nothing(server, tmp_path, monkeypatch):  # noqa: F811
    """The acceptance run: DETECTOR_WEIGHTS_CATALOG names team-model (a checkpoint on a server on 127.0.0.1, its
    SHA-256), TORCH_HOME is empty; detect.py IMAGE --weights team-model downloads it once and detects. Served
    truncated, the same command exits 2 with one line and leaves no file under TORCH_HOME."""
    from ..unit.test_downloads import Handler
    from ..unit.tiny_checkpoint import write_tiny_checkpoint

    body = write_tiny_checkpoint(tmp_path / "team.pt").read_bytes()
    Handler.files["team.pt"] = body
    image = tmp_path / "shelf.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    for mode, torch_home in (("good", tmp_path / "torch"), ("drop", tmp_path / "torch2")):
        listing = tmp_path / f"{mode}.yaml"
        listing.write_text(f"team-model:\n  url: {server}/{mode}/team.pt\n  sha256: "
                           f"{hashlib.sha256(body).hexdigest()}\n  kind: checkpoint\n")  # fmt: skip
        monkeypatch.setenv("DETECTOR_WEIGHTS_CATALOG", str(listing))
        monkeypatch.setenv("TORCH_HOME", str(torch_home))
        runs = [tool_in_process("tools/detect.py", str(image), "--weights", "team-model") for _ in range(2)]
        if mode == "good":
            assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
            assert Handler.requests == ["/good/team.pt"], "downloaded once, then from the cache"
            assert "1 frames in" in runs[1].stdout
        else:
            errors = [[line for line in r.stderr.splitlines() if line.startswith("error:")] for r in runs]
            assert [r.returncode for r in runs] == [2, 2] and all(len(e) == 1 for e in errors)
            assert "the connection closed after" in errors[0][0] and "Traceback" not in runs[0].stderr
            assert not [p for p in torch_home.rglob("*") if p.is_file()], "no file left under TORCH_HOME"


def test_convert_lists_fetches_imports_and_verifies_the_cache(server, tmp_path, monkeypatch):  # noqa: F811
    from ..unit.test_downloads import BODY, DIGEST

    listing = tmp_path / "team.yaml"
    listing.write_text(f"team-model:\n  url: {server}/good/team.pt\n  sha256: {DIGEST}\n"
                       f"carried:\n  url: https://intranet.example/carried.pt\n  sha256: {DIGEST}\n")  # fmt: skip
    monkeypatch.setenv("DETECTOR_WEIGHTS_CATALOG", str(listing))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    result = tool_in_process("tools/convert.py", "--fetch", "team-model")
    assert result.returncode == 0 and (folder / "team.pt").read_bytes() == BODY
    copy, wrong = tmp_path / "usb" / "carried.pt", tmp_path / "usb" / "other.pt"
    copy.parent.mkdir()
    copy.write_bytes(BODY), wrong.write_bytes(BODY[:-1])
    result = tool_in_process("tools/convert.py", "--import", str(wrong), "--name", "carried")
    assert result.returncode == 2 and "not imported" in result.stderr and not (folder / "carried.pt").exists()
    assert tool_in_process("tools/convert.py", "--import", str(copy), "--name", "carried").returncode == 0
    listed = tool_in_process("tools/convert.py", "--list").stdout.splitlines()
    assert [line.split()[2] for line in listed if line.startswith(("team-model", "carried", "torchvision-coco"))] == [
        "missing", "cached", "cached"]  # fmt: skip
    result = tool_in_process("tools/convert.py", "--verify")
    assert result.returncode == 0 and "team-model               ok: verified" in result.stdout
    (folder / "team.pt").write_bytes(BODY[::-1])  # damaged in place
    result = tool_in_process("tools/convert.py", "--verify")
    assert result.returncode == 1 and "team-model               REFUSED: SHA-256" in result.stdout
