import pytest
import torch

from detector.build import build_criterion, build_model
from detector.config import Config, ModelConfig

from ..conftest import randomise_batchnorm

BACKBONES = [
    ("mobilenet_v3_large", 1.0, True),
    ("mobilenet_v3_small", 1.0, False),
    ("mobilenet_v2", 0.35, False),
    ("mnasnet_a1", 0.5, False),
    ("mobilenet_v1", 0.25, False),
]


@pytest.mark.parametrize("backbone,width,reduced", BACKBONES)
@pytest.mark.parametrize("layout,loss", [("paper", "focal"), ("torchvision", "softmax_hnm")])
def test_gradients_reach_every_parameter(backbone, width, reduced, layout, loss):
    cfg = Config()
    cfg.model = ModelConfig(
        backbone=backbone, width=width, reduced_tail=reduced, layout=layout, num_classes=3, image_size=(128, 128)
    )
    cfg.loss.kind = loss
    model, criterion = build_model(cfg.model), build_criterion(cfg.loss)
    model.train()
    images = torch.rand(2, 3, 128, 128)
    # One object on an anchor of every level, so that every predictor has a positive.
    per_level = [h * w * (3 if layout == "paper" and i == 0 else 6) for i, (h, w) in enumerate(model.feature_sizes)]
    starts = torch.tensor([0, *per_level[:-1]]).cumsum(0)
    gt = model.anchors[starts].clone()
    targets = [
        {"boxes": gt[::2], "labels": torch.tensor([1, 3, 2])},
        {"boxes": gt[1::2], "labels": torch.tensor([2, 1, 3])},
    ]
    boxes, logits = model(images)
    assert boxes.shape == (2, model.anchors.shape[0], 4) and logits.shape == (2, model.anchors.shape[0], 4)
    criterion(boxes, logits, model.anchors, targets)["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_same_raw_outputs_in_train_and_eval_mode():
    """Raw outputs in both modes, and nothing but BatchNorm's statistics behaves differently: with BatchNorm
    on its running statistics, a model in train mode gives eval mode's outputs to the bit."""
    model = build_model(ModelConfig(backbone="mobilenet_v3_small", image_size=(96, 96)))
    randomise_batchnorm(model)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        a = model.eval()(x)
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        b = model(x)
        batch_statistics = model.train()(x)
    anchors = len(model.anchors)
    assert [tuple(t.shape) for t in a] == [(2, anchors, 4), (2, anchors, model.num_classes + 1)]
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert [t.shape for t in batch_statistics] == [t.shape for t in a] and not torch.equal(batch_statistics[1], a[1])


def test_wrong_input_size_is_a_clear_error():
    model = build_model(ModelConfig(backbone="mobilenet_v3_small", image_size=(96, 96))).eval()
    with pytest.raises(ValueError, match=r"takes \(96, 96\)"):
        model(torch.rand(1, 3, 64, 64))


def test_class_bias_prior():
    model = build_model(ModelConfig(backbone="mobilenet_v3_small", class_bias_init=-4.6))
    assert all(torch.all(h[-1].bias == -4.6) for h in model.cls_heads)


def test_backbone_truncated_normal_init_as_tf():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenet_v3_small", num_classes=2, backbone_init_std=0.03))
    w = torch.cat([m.weight.flatten() for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)])
    assert w.abs().max() <= 0.06  # redrawn beyond 2 std
    assert abs(w.std().item() - 0.03 * 0.8796) < 0.001  # the std of a normal truncated at 2 std
    he = build_model(ModelConfig(backbone="mobilenet_v3_small", num_classes=2))
    w_he = torch.cat([m.weight.flatten() for m in he.backbone.modules() if isinstance(m, torch.nn.Conv2d)])
    assert w_he.abs().max() > 0.06
