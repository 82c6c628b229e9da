import torch
from torchvision.models.detection._utils import SSDMatcher
from torchvision.ops import box_iou

from detector.ssd.matcher import IGNORE, NEGATIVE, Matcher


def test_threshold_and_forcing():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60], [100, 100, 200, 200]], dtype=torch.float)
    # gt 0 overlaps anchors 0 and 1 well; gt 1 overlaps anchor 3 at IoU 0.25 only: forced onto it.
    gt = torch.tensor([[0, 0, 10, 10], [100, 100, 150, 150]], dtype=torch.float)
    matches = Matcher(0.5)(gt, anchors)
    assert matches.tolist() == [0, 0, NEGATIVE, 1]


def test_no_ground_truth_gives_all_negative():
    matches = Matcher()(torch.zeros(0, 4), torch.rand(7, 4) + torch.tensor([0, 0, 1, 1]))
    assert (matches == NEGATIVE).all()


def test_crowd_boxes_are_ignored_not_negative():
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [80, 80, 90, 90]], dtype=torch.float)
    gt = torch.tensor([[80, 80, 90, 90]], dtype=torch.float)
    crowd = torch.tensor([[19, 19, 31, 31]], dtype=torch.float)
    assert Matcher()(gt, anchors, crowd).tolist() == [NEGATIVE, IGNORE, 0]


def test_equals_torchvision_ssd_matcher():
    xy = torch.rand(400, 2) * 300
    anchors = torch.cat([xy, xy + torch.rand(400, 2) * 80 + 5], 1)
    xy = torch.rand(12, 2) * 300
    gt = torch.cat([xy, xy + torch.rand(12, 2) * 80 + 5], 1)
    expected = SSDMatcher(0.5)(box_iou(gt, anchors))
    assert torch.equal(Matcher(0.5)(gt, anchors), expected)
