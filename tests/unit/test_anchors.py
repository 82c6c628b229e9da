import math

import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from detector.build import build_model
from detector.config import ModelConfig
from detector.ssd.anchors import grid_anchors, paper_pairs, torchvision_pairs


def test_paper_anchors_on_a_tiny_map_are_exact():
    # A 2x2 lowest level on a 100x100 input: 3 boxes per cell, (0.1, 1), (0.2, 2), (0.2, 1/2).
    pairs = paper_pairs(6)[:1]
    anchors = grid_anchors([(2, 2)], pairs, (100, 100))
    r2 = math.sqrt(2.0)
    cell = [(10.0, 10.0), (20 * r2, 20 / r2), (20 / r2, 20 * r2)]
    expected = []
    for cy in (25.0, 75.0):
        for cx in (25.0, 75.0):
            for w, h in cell:
                expected.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    torch.testing.assert_close(anchors, torch.tensor(expected), rtol=0, atol=1e-4)


def test_paper_upper_level_has_six_boxes_with_the_interpolated_scale():
    levels = paper_pairs(6)
    s1, s2 = 0.2 + 0.75 / 5, 0.2 + 0.75 * 2 / 5
    w, h = levels[1][5]
    assert math.isclose(w, math.sqrt(s1 * s2)) and math.isclose(h, math.sqrt(s1 * s2))
    w, h = levels[1][3]  # ratio 3: width = s * sqrt(3)
    assert math.isclose(w, s1 * math.sqrt(3)) and math.isclose(h, s1 / math.sqrt(3))
    assert [len(level) for level in levels] == [3, 6, 6, 6, 6, 6]
    top = levels[5][5]  # sqrt(0.95 * 1.0)
    assert math.isclose(top[0], math.sqrt(0.95))


def test_torchvision_anchors_on_a_tiny_map_are_exact():
    anchors = grid_anchors([(1, 2)], torchvision_pairs(6)[:1], (40, 80))
    s, sp = 0.2, math.sqrt(0.2 * 0.35)
    rel = [
        (s, s),
        (sp, sp),
        (s * math.sqrt(2), s / math.sqrt(2)),
        (s / math.sqrt(2), s * math.sqrt(2)),
        (s * math.sqrt(3), s / math.sqrt(3)),
        (s / math.sqrt(3), s * math.sqrt(3)),
    ]
    expected = []
    for cx in (20.0, 60.0):
        for w, h in rel:
            expected.append([cx - w * 40, 20 - h * 20, cx + w * 40, 20 + h * 20])
    torch.testing.assert_close(anchors, torch.tensor(expected), rtol=0, atol=1e-4)


def test_anchor_counts_at_320():
    assert build_model(ModelConfig(layout="paper")).anchors.shape == (2034, 4)
    assert build_model(ModelConfig(layout="torchvision")).anchors.shape == (3234, 4)
    assert build_model(ModelConfig(backbone="mobilenet_v3_small", layout="paper")).anchors.shape == (2034, 4)


def test_torchvision_layout_equals_default_box_generator():
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    gen = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    maps = [torch.zeros(1, 1, h, w) for h, w in sizes]
    expected = gen(ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)]), maps)[0]
    torch.testing.assert_close(grid_anchors(sizes, torchvision_pairs(6), (320, 320)), expected, rtol=0, atol=1e-4)


def test_non_square_input_keeps_map_sizes_and_centres():
    model = build_model(ModelConfig(image_size=(256, 384), backbone="mobilenet_v3_small")).eval()
    assert model.feature_sizes == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    boxes, logits = model(torch.rand(1, 3, 256, 384))
    assert boxes.shape[1] == logits.shape[1] == model.anchors.shape[0]
    centres = (model.anchors[:, :2] + model.anchors[:, 2:]) / 2
    assert centres[:, 0].min() > 0 and centres[:, 0].max() < 384 and centres[:, 1].max() < 256
