import pickle

import pytest
import torch

from detector import checkpoint, config
from detector.config import ConfigError
from detector.errors import UserError


def test_defaults_are_the_paper_setup():
    cfg = config.load()
    assert (cfg.model.backbone, cfg.model.reduced_tail, cfg.model.layout) == ("mobilenet_v3_large", True, "paper")
    assert (cfg.loss.kind, cfg.loss.focal_alpha, cfg.loss.focal_gamma) == ("focal", 0.75, 2.0)
    assert (cfg.postprocess.score_thresh, cfg.postprocess.nms_thresh, cfg.postprocess.max_detections) == (
        1e-8,
        0.6,
        100,
    )


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  backbone: mobilenet_v3_small\n  width: 1\nloss:\n  kind: softmax_hnm\n")
    cfg = config.load(path, ["model.image_size=[256, 192]", "postprocess.nms_thresh=0.5"])
    assert cfg.model.backbone == "mobilenet_v3_small" and cfg.model.width == 1.0
    assert cfg.model.image_size == (256, 192) and cfg.postprocess.nms_thresh == 0.5
    assert config.from_dict(config.to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.backbon=x", "model.backbon"),
        ("model.width=wide", "model.width"),
        ("nosection.a=1", "nosection"),
        ("model.image_size=3", "model.image_size"),
        ("justakey", "key=value"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [override])


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.layout=pap", "model.layout: unknown 'pap'; expected one of paper, torchvision"),
        ("model.backbone=resnet50", "model.backbone: unknown 'resnet50'; expected one of mobilenet_v3_large"),
        ("data.augment=[hflip, flip]", r"data.augment\[1\]: unknown 'flip'; expected one of photometric"),
        ("postprocess.nms_thresh=1.5", r"postprocess.nms_thresh: expected an IoU in \[0, 1\], got 1.5"),
        ("model.image_size=[16, 320]", r"model.image_size: expected \[H, W\] of at least 32 pixels"),
        ("train.batch_size=0", "train.batch_size: expected at least 1, got 0"),
        ("model.backbone=mobilenet_v2", "model.reduced_tail: only MobileNetV3 has a reduced tail"),
    ],
)
def test_values_are_checked_where_the_config_is_made(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [override])
    assert config.load(None, ["model.backbone=mobilenet_v2", "model.reduced_tail=false"]).model.width == 1.0


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        config.load(path)


def test_checkpoint_round_trip_and_no_temp_files_left(tmp_path):
    path = tmp_path / "sub" / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(2)}, "config": {}, "categories": []})
    checkpoint.save(path, {"model": {"w": torch.zeros(2)}, "config": {}, "categories": []})
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["model"]["w"], torch.zeros(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


class _Exploit:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "config": {}, "categories": [], "x": _Exploit()}, path)
    with pytest.raises(UserError, match="refused"):
        checkpoint.load(path)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_Exploit(), f)
    with pytest.raises(UserError):
        checkpoint.load(tmp_path / "plain.pkl")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(1000)}, "config": {}, "categories": []})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="truncated or corrupted"):
        checkpoint.load(path)


def test_exponent_floats_without_a_dot_are_floats():
    cfg = config.load(None, ["train.lr=1e-3", "train.weight_decay=4e-5"])
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 4e-5
