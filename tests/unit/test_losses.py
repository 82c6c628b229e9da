import pytest
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.ops import box_iou

from detector.ssd.anchors import grid_anchors, paper_pairs, torchvision_pairs
from detector.ssd.losses import FocalLoss, HardNegativeSoftmaxLoss

SIZES = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def _targets(n_images: int, per_image: int, num_classes: int = 90) -> list[dict]:
    out = []
    for _ in range(n_images):
        xy = torch.rand(per_image, 2) * 220
        boxes = torch.cat([xy, xy + torch.rand(per_image, 2) * 90 + 10], 1)
        out.append({"boxes": boxes, "labels": torch.randint(1, num_classes + 1, (per_image,))})
    return out


@pytest.mark.parametrize("loss", [FocalLoss(), HardNegativeSoftmaxLoss()])
def test_no_objects_gives_finite_loss_and_zero_box_loss(loss):
    anchors = grid_anchors(SIZES, paper_pairs(), (320, 320))
    regression = torch.randn(2, len(anchors), 4, requires_grad=True)
    logits = torch.randn(2, len(anchors), 91, requires_grad=True)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    out = loss(regression, logits, anchors, empty)
    assert out["box"].item() == 0.0
    assert torch.isfinite(out["total"])
    out["total"].backward()
    assert torch.isfinite(logits.grad).all()
    if isinstance(loss, FocalLoss):
        assert out["cls"].item() > 0  # every anchor is a negative: the background still teaches


def test_focal_loss_matches_the_formula():
    # 2 anchors, 3 slots (background + 2 classes); anchor 0 matches a class-2 box, anchor 1 is background.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    target = [{"boxes": torch.tensor([[1.0, 0.0, 11.0, 10.0]]), "labels": torch.tensor([2])}]
    logits = torch.tensor([[[0.3, -1.0, 0.5], [-0.2, 0.1, -2.0]]])
    regression = torch.tensor([[[0.5, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    out = FocalLoss(alpha=0.75, gamma=2.0)(regression, logits, anchors, target)
    p = logits.sigmoid()
    y = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    pt = p * y + (1 - p) * (1 - y)
    alpha = 0.75 * y + 0.25 * (1 - y)
    expected_cls = (-alpha * (1 - pt) ** 2 * torch.log(pt)).sum() / 1
    # dx = 10 * 1 / 10 = 1; Smooth L1 of (0.5 - 1) = 0.125, divided by the code size 4
    torch.testing.assert_close(out["cls"], expected_cls)
    torch.testing.assert_close(out["box"], torch.tensor(0.125 / 4))


def test_ignored_anchors_do_not_count():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [80.0, 80.0, 90.0, 90.0]])
    base = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}
    logits = torch.randn(1, 3, 3)
    regression = torch.zeros(1, 3, 4)
    loss = FocalLoss()
    plain = loss(regression, logits, anchors, [base])
    crowd = loss(regression, logits, anchors, [{**base, "crowd_boxes": torch.tensor([[50.0, 50.0, 60.0, 60.0]])}])
    p = logits[0, 1].sigmoid()
    anchor1 = (-0.25 * p**2 * torch.log(1 - p)).sum()
    torch.testing.assert_close(plain["cls"] - crowd["cls"], anchor1)


def test_softmax_loss_equals_torchvision_compute_loss():
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    anchors = grid_anchors(SIZES, torchvision_pairs(), (320, 320))
    targets = _targets(3, 5)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    regression, logits = torch.randn(3, len(anchors), 4), torch.randn(3, len(anchors), 91)
    matched = []
    for t in targets:
        if t["boxes"].numel() == 0:
            matched.append(torch.full((len(anchors),), -1, dtype=torch.int64))
        else:
            matched.append(tv.proposal_matcher(box_iou(t["boxes"], anchors)))
    expected = tv.compute_loss(targets, {"bbox_regression": regression, "cls_logits": logits}, [anchors] * 3, matched)
    got = HardNegativeSoftmaxLoss()(regression, logits, anchors, targets)
    torch.testing.assert_close(got["box"], expected["bbox_regression"])
    torch.testing.assert_close(got["cls"], expected["classification"])
