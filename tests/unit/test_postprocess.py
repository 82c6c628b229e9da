from functools import partial

import pytest
import torch
from torchvision.ops import nms

from detector.ssd import postprocess
from detector.ssd.postprocess import PostProcessor


def per_class_loop(boxes, scores, thresh, iou, topk, max_det, after_nms=False):
    """The straightforward reference, class by class: threshold, then the best ``topk`` candidates enter NMS
    (torchvision), or with ``after_nms`` every candidate enters and the best ``topk`` survivors stay (TF's
    multiclass_non_max_suppression); then the best ``max_det`` overall."""
    kept_boxes, kept_scores, kept_labels = [], [], []
    for c in range(scores.shape[1]):
        s = scores[:, c]
        mask = s > thresh
        s, b = s[mask], boxes[mask]
        s, order = s.sort(descending=True) if after_nms else s.topk(min(topk, s.numel()))
        b = b[order]
        keep = nms(b, s, iou)[:topk]
        kept_boxes.append(b[keep])
        kept_scores.append(s[keep])
        kept_labels.append(torch.full((len(keep),), c + 1, dtype=torch.int64))
    b, s, lab = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
    order = s.argsort(descending=True)[:max_det]
    return b[order], s[order], lab[order]


@pytest.mark.parametrize("thresh,iou,per_class,total", [(1e-8, 0.6, 100, 100), (0.3, 0.6, 5, 1000), (0.5, 0.3, 2, 50)])
@pytest.mark.parametrize("score_fn", ["sigmoid", "softmax"])
def test_after_nms_equals_tfs_per_class_loop(thresh, iou, per_class, total, score_fn):
    for _ in range(2):
        anchors, codes, logits = _random_case(2034, 90)
        post = PostProcessor(score_fn, thresh, iou, per_class, total, (320, 320), anchors, per_class_limit="after_nms")
        boxes, scores = post.boxes(codes), post.scores(logits)
        b, s, lab = per_class_loop(boxes, scores, thresh, iou, per_class, total, after_nms=True)
        for got in (post.select(codes, logits), post.select_boxes(boxes, scores)):
            assert torch.equal(got["scores"], s) and torch.equal(got["labels"], lab) and torch.equal(got["boxes"], b)


def test_a_crowded_class_keeps_its_boxes_only_after_nms():
    # 150 separate people, each with a near-duplicate box: NMS removes the duplicates. With the limit before NMS
    # the 100 best candidates are 50 people and their duplicates; after NMS, 100 of the 150 people stay.
    xy = torch.arange(150, dtype=torch.float64)[:, None].repeat(1, 2) * 20
    people = torch.cat([xy, xy + 10], 1)
    boxes = torch.cat([people, people + 0.5]).reshape(2, 150, 4).transpose(0, 1).reshape(300, 4)
    scores = torch.linspace(1.0, 0.5, 300, dtype=torch.float64)[:, None]
    for limit, expected in (("before_nms", 50), ("after_nms", 100)):
        post = PostProcessor("sigmoid", 0.01, 0.6, 100, 300, (4000, 4000), per_class_limit=limit)
        assert len(post.select_boxes(boxes, scores)["scores"]) == expected


def _random_case(anchors: int, classes: int):
    # float64: float32 uniforms tie often enough over 10^5 values to make the order ambiguous
    xy = torch.rand(anchors, 2, dtype=torch.float64) * 280
    anchor_boxes = torch.cat([xy, xy + torch.rand(anchors, 2, dtype=torch.float64) * 60 + 4], 1)
    codes = torch.randn(anchors, 4, dtype=torch.float64)
    logits = torch.randn(anchors, classes + 1, dtype=torch.float64) * 3 - 2
    return anchor_boxes, codes, logits


@pytest.mark.parametrize(
    "thresh,iou,topk,max_det",
    [(0.001, 0.55, 300, 300), (1e-8, 0.6, 100, 100), (0.5, 0.5, 20, 1000), (0.99, 0.6, 100, 100)],
)
@pytest.mark.parametrize("score_fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize(
    "sampled,threshold_first", [(False, 0.0), (True, 0.0), (True, 1.1)], ids=["topk-all", "bound", "threshold-first"]
)
def test_equals_a_per_class_loop(thresh, iou, topk, max_det, score_fn, sampled, threshold_first, monkeypatch):
    # Every candidate route (a top-k over all values, a sampled bound, thresholding first) gives the same answer.
    monkeypatch.setattr(postprocess, "SAMPLED_ROUTES", sampled)
    monkeypatch.setattr(postprocess, "THRESHOLD_FIRST", threshold_first)
    for _ in range(3):
        anchors, codes, logits = _random_case(2034, 90)
        post = PostProcessor(score_fn, thresh, iou, topk, max_det, (320, 320), anchors)
        boxes = post.boxes(codes)
        scores = post.scores(logits)
        b, s, lab = per_class_loop(boxes, scores, thresh, iou, topk, max_det)
        for got in (post.select(codes, logits), post.select_boxes(boxes, scores)):
            assert torch.equal(got["scores"], s)
            assert torch.equal(got["labels"], lab)
            assert torch.equal(got["boxes"], b)


def test_nothing_above_threshold_gives_empty_results():
    post = PostProcessor("sigmoid", 0.5, 0.6, 100, 100, (32, 32), torch.rand(10, 4) + torch.tensor([0, 0, 2, 2]))
    out = post(torch.zeros(2, 10, 4), torch.full((2, 10, 5), -20.0))
    assert [len(o["scores"]) for o in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4) and out[0]["labels"].dtype == torch.int64


def test_softmax_drops_the_background_slot_and_boxes_scale_to_the_image():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 16.0, 32.0, 32.0]])
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])  # anchor 0 is background, 1 is class 1
    out = PostProcessor("softmax", 0.5, 0.5, 10, 10, (32, 32), anchors)(torch.zeros(1, 2, 4), logits, [(64, 320)])
    assert out[0]["labels"].tolist() == [1]
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[160.0, 32.0, 320.0, 64.0]]))


def test_boxes_are_clipped_to_the_input():
    anchors = torch.tensor([[-10.0, -10.0, 50.0, 50.0]])
    out = PostProcessor("sigmoid", 0.0, 0.5, 10, 10, (32, 40), anchors)(torch.zeros(1, 1, 4), torch.ones(1, 1, 2))
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[0.0, 0.0, 40.0, 32.0]]))


def tf_multiclass_nms(boxes, scores, thresh, iou, per_class, total, size):
    """TF's ``multiclass_non_max_suppression`` as its source describes it, class by class: the candidates
    above ``thresh`` enter NMS on their unclipped boxes, which keeps at most ``per_class`` of them
    (``max_size_per_class``); all survivors are sorted by score, clipped to the (H, W) window, those of zero
    area dropped (``_clip_window_prune_boxes``), and the first ``total`` kept (``max_total_size``)."""
    kept_boxes, kept_scores, kept_labels = [], [], []
    for c in range(scores.shape[1]):
        mask = scores[:, c] > thresh
        s, b = scores[mask, c], boxes[mask]
        keep = nms(b, s, iou)[:per_class]
        kept_boxes.append(b[keep])
        kept_scores.append(s[keep])
        kept_labels.append(torch.full((len(keep),), c + 1, dtype=torch.int64))
    b, s, lab = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
    order = s.argsort(descending=True)
    b, s, lab = b[order], s[order], lab[order]
    h, w = size
    b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], 1)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    b, s, lab = b[area > 0], s[area > 0], lab[area > 0]
    return b[:total], s[:total], lab[:total]


def _border_case(anchors: int, classes: int, size: tuple[int, int]):
    """Anchors spread from 100 pixels beyond the input on every side: many cross the border, some lie wholly
    outside; float64 so that no two scores tie."""
    h, w = size
    xy = torch.rand(anchors, 2, dtype=torch.float64) * torch.tensor([w + 200.0, h + 200.0]) - 100
    anchor_boxes = torch.cat([xy, xy + torch.rand(anchors, 2, dtype=torch.float64) * 80 + 4], 1)
    codes = torch.randn(anchors, 4, dtype=torch.float64) * 0.5
    logits = torch.randn(anchors, classes + 1, dtype=torch.float64) * 3 - 2
    return anchor_boxes, codes, logits


@pytest.mark.parametrize("thresh,iou,per_class,total", [(1e-8, 0.6, 100, 100), (0.3, 0.5, 5, 1000), (0.6, 0.3, 3, 40)])
@pytest.mark.parametrize("score_fn", ["sigmoid", "softmax"])
def test_clip_after_nms_equals_tfs_multiclass_nms(thresh, iou, per_class, total, score_fn):
    size = (240, 320)
    for _ in range(2):
        anchors, codes, logits = _border_case(2034, 20, size)
        post = PostProcessor(score_fn, thresh, iou, per_class, total, size, anchors, per_class_limit="after_nms",
                             clip_boxes="after_nms")  # fmt: skip
        unclipped, scores = post.coder.decode(codes, anchors), post.scores(logits)
        assert torch.equal(post.boxes(codes), unclipped)  # what NMS sees, and what a raw exported graph returns
        b, s, lab = tf_multiclass_nms(unclipped, scores, thresh, iou, per_class, total, size)
        for got in (post.select(codes, logits), post.select_boxes(unclipped, scores)):
            assert torch.equal(got["scores"], s) and torch.equal(got["labels"], lab) and torch.equal(got["boxes"], b)


def test_clipping_before_or_after_nms_differ_on_boxes_across_the_border():
    # Two boxes of one class hanging over the left edge: unclipped they overlap little (IoU 0.33), clipped they
    # are the same box (IoU 1). TF keeps both, torchvision's order keeps one. A third box lies wholly outside:
    # TF drops it after clipping (zero area); clipped before NMS it stays as a zero-width box.
    boxes = torch.tensor([[-60.0, 10.0, 20.0, 50.0], [-20.0, 10.0, 20.0, 50.0], [-50.0, 60.0, -10.0, 90.0]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    after = PostProcessor("sigmoid", 0.1, 0.5, 10, 10, (100, 100), per_class_limit="after_nms", clip_boxes="after_nms")
    before = PostProcessor("sigmoid", 0.1, 0.5, 10, 10, (100, 100), per_class_limit="after_nms")
    got = after.select_boxes(boxes, scores)
    torch.testing.assert_close(got["boxes"], torch.tensor([[0.0, 10.0, 20.0, 50.0], [0.0, 10.0, 20.0, 50.0]]))
    assert got["scores"].tolist() == pytest.approx([0.9, 0.8])
    got = before.select_boxes(before.clip(boxes), scores)
    assert got["scores"].tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize(
    "limit,clip", [("after_nms", "after_nms"), ("after_nms", "before_nms"), ("before_nms", "before_nms")]
)
@pytest.mark.parametrize("score_fn", ["sigmoid", "softmax"])
def test_min_score_before_nms_equals_filtering_afterwards(limit, clip, score_fn):
    """A caller's threshold (--conf) applied before NMS keeps exactly the detections that filtering the model's
    own afterwards keeps: NMS suppresses only from higher to lower scores, and the limits keep the best."""
    for seed in range(3):
        torch.manual_seed(seed)
        anchors, codes, logits = _border_case(2034, 20, (240, 320))
        logits = logits / 2 - 1  # scores spread over (0, 1), so that each threshold below cuts
        post = PostProcessor(score_fn, 1e-8, 0.5, 50, 600, (240, 320), anchors, per_class_limit=limit, clip_boxes=clip)
        boxes, all_scores = post.boxes(codes), post.scores(logits)
        # each route against itself (their sigmoids may differ in the last bit: computed over other tensors)
        for run in (partial(post.select, codes, logits), partial(post.select_boxes, boxes, all_scores)):
            everything = run(0.0)
            scores = everything["scores"]
            assert len(scores) >= 300 and scores[-1] < scores[len(scores) // 2] < scores[0]  # the confs below cut
            for conf in (0.05, float(scores[len(scores) // 2]), float(scores[0]), 0.5, 1.0):  # ties at conf included
                got, keep = run(conf), scores >= conf
                assert torch.equal(got["scores"], scores[keep]) and torch.equal(
                    got["labels"], everything["labels"][keep]
                )
                assert torch.equal(got["boxes"], everything["boxes"][keep])


def test_unclipped_boxes_far_outside_never_suppress_another_class():
    # A box of class 3 hanging far past the top-left corner must not meet a class-2 box near the bottom-right
    # when the classes are offset for one NMS call (coordinates below 0 once broke that).
    boxes = torch.tensor([[280.0, 280, 320, 320], [-45, -45, 5, 5], [0, 0, 1000, 1000]])
    scores = torch.tensor([[0.0, 0.9, 0.0], [0.0, 0.0, 0.8], [0.1, 0.0, 0.0]])
    post = PostProcessor(
        "sigmoid", 0.01, 0.6, 100, 100, (320, 320), per_class_limit="after_nms", clip_boxes="after_nms"
    )
    assert post.select_boxes(boxes, scores)["scores"].tolist() == pytest.approx([0.9, 0.8, 0.1])
    assert post.select_boxes(boxes, scores, 0.15)["scores"].tolist() == pytest.approx([0.9, 0.8])
    for _ in range(20):  # and against TF's loop, boxes up to 350 pixels beyond the input
        xy = torch.rand(200, 2, dtype=torch.float64) * 1020 - 350
        wh = torch.rand(200, 2, dtype=torch.float64) * 120 + 4
        boxes, scores = torch.cat([xy, xy + wh], 1), torch.rand(200, 5, dtype=torch.float64)
        b, s, lab = tf_multiclass_nms(boxes, scores, 0.01, 0.5, 100, 300, (320, 320))
        post = PostProcessor(
            "sigmoid", 0.01, 0.5, 100, 300, (320, 320), per_class_limit="after_nms", clip_boxes="after_nms"
        )
        got = post.select_boxes(boxes, scores)
        assert torch.equal(got["scores"], s) and torch.equal(got["labels"], lab) and torch.equal(got["boxes"], b)
