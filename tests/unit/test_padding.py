"""model.padding: tf_same pads as TF's SAME, in eager, fused, ONNX (fp32 and int8) and TorchScript paths."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector import build, checkpoint
from detector.backbones.padding import TFSameConv2d, same_padding
from detector.config import to_dict
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.pipeline import ExportOptions, export
from detector.weights.resolve import load_model

from ..conftest import randomise_batchnorm
from .tiny_checkpoint import CATEGORIES, tiny_config


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [(320, 3, 2, (0, 1)), (321, 3, 2, (1, 1)), (10, 5, 2, (1, 2)), (11, 5, 2, (2, 2)), (5, 3, 1, (1, 1)),
     (2, 3, 2, (0, 1)), (1, 3, 2, (1, 1))],
)  # fmt: skip
def test_same_padding_is_tfs(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == -(-size // stride)  # TF's ceil(n / s) outputs


@pytest.mark.parametrize("kernel", [3, 5])
def test_tf_same_conv_samples_one_pixel_later_on_even_inputs(kernel):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, kernel, 2, (kernel - 1) // 2, groups=4, bias=False)
    tf = TFSameConv2d(4, 4, kernel, 2, (kernel - 1) // 2, groups=4, bias=False)
    tf.load_state_dict(conv.state_dict())
    even, odd = torch.randn(1, 4, 10, 12), torch.randn(1, 4, 11, 13)
    reference = F.conv2d(F.pad(even, [(kernel - 3) // 2, (kernel - 1) // 2] * 2), conv.weight, None, 2, 0, 1, 4)
    assert torch.equal(tf(even), reference)
    assert not torch.allclose(tf(even), conv(even))
    assert torch.equal(tf(odd), conv(odd))  # odd sizes: TF's SAME is symmetric


@pytest.fixture(scope="module")
def tf_same_detector(tmp_path_factory):
    cfg = tiny_config()
    cfg.model.padding = "tf_same"
    torch.manual_seed(0)
    model = build.build_model(cfg.model).eval()
    randomise_batchnorm(model)
    path = tmp_path_factory.mktemp("ckpt") / "tf_same.pt"
    checkpoint.save(path, {"model": model.state_dict(), "config": to_dict(cfg), "categories": CATEGORIES})
    return load_model(path)


def test_the_model_keeps_its_keys_and_anchors(tf_same_detector):
    model = tf_same_detector.model
    symmetric = build.build_model(tiny_config().model)
    assert list(model.state_dict()) == list(symmetric.state_dict())
    assert torch.equal(model.anchors, symmetric.anchors)
    strided = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and max(m.stride) > 1]
    assert strided and all(isinstance(m, TFSameConv2d) for m in strided)
    symmetric.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x)[1], symmetric.eval()(x)[1])


def test_fused_onnx_int8_and_torchscript_paths_keep_tf_same(tf_same_detector, tmp_path):
    model = tf_same_detector.model
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), fuse_for_inference(model)(x)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    report = export(tf_same_detector, tmp_path / "m.onnx", ExportOptions(), say=lambda _: None)
    assert report.raw_parity.ok
    options = ExportOptions(format="torchscript")
    assert export(tf_same_detector, tmp_path / "m.torchscript.pt", options, say=lambda _: None).raw_parity.ok
    calib = []
    for i in range(2):
        calib.append(tmp_path / f"c{i}.png")
        import cv2

        cv2.imwrite(str(calib[-1]), (np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8))
    int8 = export(tf_same_detector, tmp_path / "m.int8.onnx", ExportOptions(calibration=calib), say=lambda _: None)
    assert int8.precision == "int8" and int8.int8_drift["box_max"] < 64
