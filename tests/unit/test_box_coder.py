import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from detector.ssd.box_coder import BoxCoder


def _boxes(n: int) -> torch.Tensor:
    xy = torch.rand(n, 2) * 300
    return torch.cat([xy, xy + torch.rand(n, 2) * 100 + 10], 1)  # size ratios within the decode clamp (62.5)


def test_encode_decode_round_trip():
    coder = BoxCoder()
    anchors, boxes = _boxes(500), _boxes(500)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, rtol=0, atol=1e-3)


def test_codes_of_the_anchor_itself_are_zero_and_scaled_as_the_paper():
    coder = BoxCoder()
    anchor = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, centre (20, 40)
    assert coder.encode(anchor, anchor).abs().max() == 0
    shifted = torch.tensor([[12.0, 20.0, 32.0, 60.0]])  # centre moved by 2 = 0.1 widths -> dx = 10 * 0.1
    torch.testing.assert_close(coder.encode(shifted, anchor), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    doubled = torch.tensor([[0.0, 20.0, 40.0, 60.0]])  # width x2 -> dw = 5 * log 2
    torch.testing.assert_close(coder.encode(doubled, anchor)[0, 2], torch.tensor(5 * 0.6931472))


def test_equals_torchvision_box_coder():
    ours, tv = BoxCoder(), TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    anchors, boxes = _boxes(300), _boxes(300)
    torch.testing.assert_close(ours.encode(boxes, anchors), tv.encode_single(boxes, anchors), rtol=1e-5, atol=1e-4)
    codes = torch.randn(300, 4) * 3
    torch.testing.assert_close(ours.decode(codes, anchors), tv.decode_single(codes, anchors), rtol=1e-5, atol=1e-3)


def test_decode_stays_finite_for_wild_codes():
    out = BoxCoder().decode(torch.full((4, 4), 1e4), _boxes(4))
    assert torch.isfinite(out).all()
