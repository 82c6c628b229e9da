"""tools/convert.py: a torchvision state dict and a catalog name into checkpoints of ours (the TF frozen graphs
are converted in tests/unit/test_tf_graph.py)."""

import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from detector.weights.resolve import load_model

from ..conftest import randomise_batchnorm, run_tool, tool_in_process


def _random_torchvision_detector() -> torch.nn.Module:
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    randomise_batchnorm(tv)
    for m in tv.head.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.normal_(0, 0.3)  # spread the scores so that detections are not decided by ties
    return tv


def test_converted_checkpoint_gives_torchvisions_detections(tmp_path):
    tv = _random_torchvision_detector()
    state_file, out = tmp_path / "tv.pt", tmp_path / "ours.pt"
    torch.save(tv.state_dict(), state_file)
    result = run_tool("tools/convert.py", "--state-dict", str(state_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    loaded = load_model(out)
    model, post, categories, cfg = loaded.model, loaded.post, loaded.categories, loaded.config
    assert (cfg.model.layout, post.score_thresh, post.nms_thresh, post.topk_per_class, post.max_detections) == (
        "torchvision",
        0.001,
        0.55,
        300,
        300,
    )
    assert len(categories) == 90 and categories[0] == {"id": 1, "name": "person"} and categories[89]["id"] == 90
    # float64 on both sides: with float32, equal scores (ties) make the order of NMS implementation-defined.
    tv, model = tv.double(), model.double()
    images = [torch.rand(3, 320, 320, dtype=torch.float64), torch.rand(3, 240, 400, dtype=torch.float64)]
    with torch.no_grad():
        expected = tv(images)
        resized = torch.cat(
            [
                torch.nn.functional.interpolate(im[None], size=(320, 320), mode="bilinear", align_corners=False)
                for im in images
            ]
        )
        got = post(*model(resized), [im.shape[1:] for im in images])
    for e, g in zip(expected, got):
        assert len(e["scores"]) == len(g["scores"]) == 300
        assert torch.equal(e["labels"], g["labels"])
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-9)
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-3)  # anchors are float32 here


def test_bad_state_dict_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    result = tool_in_process("tools/convert.py", "--state-dict", str(bad), "--out", str(tmp_path / "o.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "foo.weight" in result.stderr
    assert not (tmp_path / "o.pt").exists()


def test_a_name_offline_without_its_file_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("DETECTOR_OFFLINE", "1")
    result = tool_in_process("tools/convert.py", "torchvision-coco", "--out", str(tmp_path / "o.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ssdlite320_mobilenet_v3_large_coco-a79551df.pth is not in" in result.stderr
    assert not (tmp_path / "o.pt").exists()
    neither = tool_in_process("tools/convert.py", "--out", str(tmp_path / "o.pt"))
    assert neither.returncode == 2 and "give exactly one of SOURCE" in neither.stderr
