import pytest
import torch
import torchvision

from detector.backbones.mobilenet_v3 import block_specs, load_torchvision_state_dict, mobilenet_v3
from detector.paper.complexity import all_params

from ..conftest import randomise_batchnorm


@pytest.mark.parametrize(
    "variant,width,reduced",
    [("large", 1.0, False), ("small", 1.0, False), ("large", 0.75, False), ("large", 1.0, True), ("small", 0.5, True)],
)
def test_imagenet_logits_equal_torchvision(variant, width, reduced):
    tv = getattr(torchvision.models, f"mobilenet_v3_{variant}")(width_mult=width, reduced_tail=reduced).eval()
    randomise_batchnorm(tv, mean=0.2, bias=0.2)
    ours = mobilenet_v3(variant, width, reduced).eval()
    load_torchvision_state_dict(ours, tv.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_imagenet_parameter_counts():
    # The figures of docs/paper.md (BatchNorm counted, as torchvision counts).
    assert all_params(mobilenet_v3("large")) == 5_483_032
    assert all_params(mobilenet_v3("small")) == 2_542_856


def test_reduced_tail_halves_the_blocks_after_c4_only():
    full, last_full, c4 = block_specs("large")
    tail, last_tail, _ = block_specs("large", reduced_tail=True)
    assert c4 == 12 and full[c4].exp_ch == tail[c4].exp_ch == 672  # C4 itself is not reduced
    assert [s.out_ch for s in tail[c4:]] == [80, 80, 80]
    assert [s.exp_ch for s in tail[c4 + 1 :]] == [480, 480]
    assert (last_full, last_tail) == (960, 480)
    assert full[:c4] == tail[:c4]
    small, last_small, c4s = block_specs("small", reduced_tail=True)
    assert (c4s, small[c4s].exp_ch, last_small, small[-1].out_ch) == (8, 288, 288, 48)


def test_se_uses_hard_sigmoid_and_stem_has_16_filters():
    net = mobilenet_v3("large")
    assert net.stem.conv.out_channels == 16 and isinstance(net.stem.act, torch.nn.Hardswish)
    se_blocks = [b for b in net.blocks if not isinstance(b.se, torch.nn.Identity)]
    assert len(se_blocks) == 8
    assert all(isinstance(b.se.gate, torch.nn.Hardsigmoid) for b in se_blocks)
    assert se_blocks[0].se.reduce.out_channels == 24  # make_divisible(72 / 4, 8)


def test_taps_have_the_paper_shapes():
    for variant, c4, c5 in (("large", 672, 480), ("small", 288, 288)):
        net = mobilenet_v3(variant, reduced_tail=True, num_classes=None).eval()
        with torch.no_grad():
            a, b = net.forward_taps(torch.zeros(1, 3, 320, 320))
        assert a.shape == (1, c4, 20, 20) and b.shape == (1, c5, 10, 10)
