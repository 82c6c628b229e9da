"""Property tests: any image size and any set of valid boxes give valid, aligned, in-image boxes; the box
code is a round trip."""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.data.transforms import apply_transform, build_transform
from detector.ssd.box_coder import BoxCoder

STEPS = ["photometric", "zoom_out", "ssd_crop", "iou_crop", "hflip"]
TRANSFORMS = {}


@st.composite
def image_and_boxes(draw):
    h = draw(st.integers(1, 700))
    w = draw(st.integers(1, 700))
    n = draw(st.integers(0, 12))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, w - 1e-3 if w > 1 else 0, allow_nan=False))
        y1 = draw(st.floats(0, h - 1e-3 if h > 1 else 0, allow_nan=False))
        x2 = draw(st.floats(min(x1 + 1e-3, w), w, allow_nan=False))
        y2 = draw(st.floats(min(y1 + 1e-3, h), h, allow_nan=False))
        boxes.append([x1, y1, x2, y2])
    steps = draw(st.lists(st.sampled_from(STEPS), max_size=4, unique=True))
    out_h, out_w = draw(st.sampled_from([(64, 64), (96, 160), (320, 320)]))
    seed = draw(st.integers(0, 2**31))
    return h, w, np.array(boxes, np.float32).reshape(-1, 4), steps, (out_h, out_w), seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_and_boxes())
def test_transforms_keep_boxes_valid_and_aligned(case):
    h, w, boxes, steps, size, seed = case
    key = (tuple(steps), size)
    if key not in TRANSFORMS:
        TRANSFORMS[key] = build_transform(size, steps)
    labels = np.arange(1, len(boxes) + 1, dtype=np.int64)
    image = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    out, b, lab = apply_transform(TRANSFORMS[key], image, boxes, labels, seed)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert b.shape == (len(lab), 4) and np.isfinite(b).all()
    assert len(set(lab.tolist())) == len(lab) and set(lab.tolist()) <= set(labels.tolist())  # no label mixed up
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    if not steps:  # a plain resize keeps every box of at least a pixel, scaled
        big = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * size[0] * size[1] / (h * w) >= 1.5
        assert set(labels[big].tolist()) <= set(lab.tolist())


box_sides = st.floats(0.5, 2000, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-500, 500),
    st.floats(-500, 500),
    box_sides,
    box_sides,
    st.floats(-500, 500),
    st.floats(-500, 500),
    box_sides,
    box_sides,
)
def test_box_code_round_trip(ax, ay, aw, ah, gx, gy, gw, gh):
    # Within the decoder's clamp (size ratios up to 1000/16) encode then decode returns the box.
    if not (16 / 1000 < gw / aw < 1000 / 16 and 16 / 1000 < gh / ah < 1000 / 16):
        return
    anchors = torch.tensor([[ax, ay, ax + aw, ay + ah]], dtype=torch.float64)
    boxes = torch.tensor([[gx, gy, gx + gw, gy + gh]], dtype=torch.float64)
    coder = BoxCoder()
    back = coder.decode(coder.encode(boxes, anchors), anchors)
    torch.testing.assert_close(back, boxes, rtol=1e-9, atol=1e-6)
