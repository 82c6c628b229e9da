"""TF's legacy bilinear resize (the TF zoo models' preprocessing) against a numpy transcription of TF's formula,
and the resize setting travelling from a config to every path into the model."""

import numpy as np
import pytest
import torch

from detector.data.image_io import preprocess, resize_rgb, resize_tf_legacy


def tf_legacy_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF's ``resize_bilinear(align_corners=False, half_pixel_centers=False)``, pixel by pixel from its
    definition: output (i, j) samples the input at (i * in_h / out_h, j * in_w / out_w), bilinearly between
    the neighbouring pixels, the last row and column repeated past the edge. The source position is computed as
    TF's kernel does, in float32 (``float(in) / out`` times i): 18 * (100 / 30) is 59.999996 there, not 60,
    which moves that output pixel by up to 1e-3 against float64 positions. The interpolation is in float64."""
    in_h, in_w = image.shape[:2]
    scale_y, scale_x = np.float32(in_h) / np.float32(out_h), np.float32(in_w) / np.float32(out_w)
    img = image.astype(np.float64)
    out = np.empty((out_h, out_w, image.shape[2]))
    for i in range(out_h):
        y = float(np.float32(i) * scale_y)
        ya, dy = int(np.floor(y)), y - np.floor(y)
        yb = min(ya + 1, in_h - 1)
        for j in range(out_w):
            x = float(np.float32(j) * scale_x)
            xa, dx = int(np.floor(x)), x - np.floor(x)
            xb = min(xa + 1, in_w - 1)
            top = img[ya, xa] * (1 - dx) + img[ya, xb] * dx
            bottom = img[yb, xa] * (1 - dx) + img[yb, xb] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((64, 48), (32, 24)), ((480, 640), (320, 320)), ((37, 53), (64, 64)), ((100, 75), (30, 41)), ((20, 20), (20, 20)),
     ((7, 300), (320, 320))],
    ids=["exact-2x", "vga-to-320", "upscale", "non-integer", "same-size", "extreme-aspect"],
)  # fmt: skip
def test_equals_tfs_formula(in_hw, out_hw):
    rng = np.random.default_rng(sum(in_hw) + sum(out_hw))
    image = rng.integers(0, 256, (*in_hw, 3), dtype=np.uint8)
    got = resize_tf_legacy(image, out_hw)
    assert got.dtype == np.float32 and got.shape == (*out_hw, 3)
    assert np.abs(got - tf_legacy_reference(image, *out_hw)).max() <= 1e-4


def test_differs_from_cv2_where_tf_does():
    # an exact 2x reduction: TF takes every other pixel, cv2 averages pairs; and TF's output is not rounded
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 1::2] = 255
    assert (resize_tf_legacy(image, (2, 2)) == 0).all()
    assert (resize_rgb(image, (2, 2), "cv2") > 100).all()
    ramp = np.arange(3, dtype=np.uint8)[None, :, None].repeat(2, 0).repeat(3, 2)
    assert resize_rgb(ramp, (2, 2), "tf_legacy")[0, 1, 0] == pytest.approx(1.5)


def test_model_input_is_the_float_resize_over_255():
    image = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    x = preprocess([image, image], (32, 40), "tf_legacy")
    assert x.shape == (2, 3, 32, 40) and x.dtype == torch.float32
    expected = torch.from_numpy(resize_tf_legacy(image, (32, 40))).permute(2, 0, 1) / 255
    torch.testing.assert_close(x[1], expected, rtol=0, atol=1e-7)
    assert not torch.equal(x[0], preprocess([image], (32, 40))[0])  # cv2's differs


def test_the_setting_travels_to_every_path_into_the_model(tmp_path):
    """A checkpoint with data.resize=tf_legacy: the PyTorch runner (detect, the API), an exported file's runner
    (its metadata) and the evaluation dataset all feed TF's resize; a cv2 checkpoint keeps cv2's."""
    import json

    import cv2

    from detector import build, checkpoint
    from detector.config import DataConfig
    from detector.deploy.onnx_format import OnnxRunner
    from detector.deploy.pipeline import ExportOptions, export
    from detector.deploy.runtimes import open_runner
    from detector.weights.resolve import load_model

    from .tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path / "tiny.pt")
    ckpt = checkpoint.load(path)
    ckpt["config"]["data"]["resize"] = "tf_legacy"
    tf_path = tmp_path / "tiny_tf.pt"
    checkpoint.save(tf_path, ckpt)
    frame = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    expected = torch.from_numpy(resize_tf_legacy(frame, (64, 64))).permute(2, 0, 1)[None] / 255
    assert open_runner("torch", path).resize == "cv2"
    runner = open_runner("torch", tf_path)
    torch.testing.assert_close(runner.prepare([frame]).cpu(), expected, rtol=0, atol=1e-7)
    export(load_model(tf_path), tmp_path / "tiny_tf.onnx", ExportOptions(), say=lambda line: None)
    onnx_runner = OnnxRunner(tmp_path / "tiny_tf.onnx", threads=1)
    np.testing.assert_allclose(onnx_runner.prepare([frame]), expected.numpy(), rtol=0, atol=1e-7)
    # evaluation: the dataset's images are TF's float resize of the files
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 70}],
                               "annotations": [], "categories": [{"id": 1, "name": "circle"}]}))  # fmt: skip
    loaded = load_model(tf_path)
    dataset = build.build_eval_dataset(loaded.config, DataConfig(val_json=str(ann), val_images=str(images)))
    image, _ = dataset[0]
    assert image.dtype == np.float32 and np.abs(image - resize_tf_legacy(frame, (64, 64))).max() == 0
