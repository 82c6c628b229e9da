"""The training engine in-process: one step, one epoch and one evaluation on a tiny generated dataset."""

import math

import pytest
import torch

from detector import build, config
from detector.training.distributed import DistInfo
from detector.training.engine import StepSettings, evaluate, train_one_epoch, train_step
from detector.training.faults import FaultInjector
from detector.training.setup import build_training
from detector.training.state import EpochSums, RunState

from ..data_fixtures import TINY_TRAIN, tiny_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = tiny_dataset(tmp_path_factory.mktemp("data"))
    cfg = config.load(None, [*TINY_TRAIN, f"data.data_root={data}", "train.epochs=1"])
    torch.manual_seed(0)
    train_set, val_set = build.build_datasets(cfg)
    return cfg, build_training(cfg, train_set, val_set, DistInfo())


def _batch(t):
    return next(iter(t.train_loader))


def _parts(t) -> dict:
    """The arguments of train_step and train_one_epoch that a Training holds."""
    return {"optim": t.optim, "settings": t.settings}


def _batchnorm_statistics(model) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]


def test_train_step_updates_weights_and_reports_finite_losses(run):
    _, t = run
    before = [p.detach().clone() for p in t.model.parameters()]
    images, targets = _batch(t)
    assert images.dtype == torch.uint8 and images.shape[-1] == 3
    losses = train_step(t.net, t.criterion, [(images, targets)], **_parts(t))
    assert set(losses) == {"total", "box", "cls"} and all(math.isfinite(v) for v in losses.values())
    assert losses["total"] == pytest.approx(losses["box"] + losses["cls"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


class NanLoss:
    """The criterion's matching, and its losses times NaN."""

    def __init__(self, criterion) -> None:
        self.criterion = criterion

    def match(self, targets, anchors):
        return self.criterion.match(targets, anchors)

    def compute(self, *args):
        return {k: v * float("nan") for k, v in self.criterion.compute(*args).items()}


def test_non_finite_loss_skips_the_step(run):
    _, t = run
    images, targets = _batch(t)
    weights = {k: v.clone() for k, v in t.model.named_parameters()}
    lr, step = t.optim.lr, t.optim.scheduler.last_epoch
    assert train_step(t.net, NanLoss(t.criterion), [(images, targets)], **_parts(t)) is None
    for key, value in t.model.named_parameters():
        assert torch.equal(value, weights[key]) and value.grad is None, key  # no step, no gradients kept
    assert (t.optim.lr, t.optim.scheduler.last_epoch) == (lr, step)  # the schedule waits


def test_a_skipped_batch_leaves_no_trace_in_batchnorm(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    cfg = config.load(None, [*TINY_TRAIN, f"data.data_root={data}", "train.epochs=1", "train.batch_size=2"])
    train_set, _ = build.build_datasets(cfg, validate=False)
    t = build_training(cfg, train_set, None, DistInfo())
    calls = []

    def overflow_second(module, inputs, output):  # the second forward overflows after the stem
        calls.append(1)
        return output * float("inf") if len(calls) == 2 else output

    hook = t.model.backbone.stem.register_forward_hook(overflow_second)
    after_steps = []
    state = RunState()
    record = lambda s, losses: after_steps.append((losses, _batchnorm_statistics(t.model)))  # noqa: E731
    train_one_epoch(t.net, t.criterion, t.train_loader, state, **_parts(t), after_step=record)
    hook.remove()
    (first, after_first), (skipped, after_skipped), (third, after_third) = after_steps[:3]
    assert first is not None and skipped is None and third is not None and state.sums.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(after_skipped, after_first))  # as before the skipped step
    assert all(torch.isfinite(b).all() for b in after_third)
    assert any(not torch.equal(a, b) for a, b in zip(after_third, after_first))  # the next step updates them


def test_one_epoch_then_evaluation(run):
    cfg, t = run
    state = RunState()
    seen = []
    record = lambda s, losses: seen.append(s.epoch_step) or False  # noqa: E731
    stats = train_one_epoch(t.net, t.criterion, t.train_loader, state, **_parts(t), after_step=record, epochs=t.epochs)
    assert stats is not None and seen == list(range(1, len(t.train_loader) + 1))
    assert state.step == len(t.train_loader) and state.sums.images == len(t.train_loader) * cfg.train.batch_size
    assert stats["loss"] == pytest.approx(state.sums.loss / state.sums.steps)
    metrics = evaluate(t.eval_model(), t.post, t.val_loader, t.val_gt, t.labels, t.settings.device)
    assert {"AP", "AP50", "per_class"} <= set(metrics) and -1.0 <= metrics["AP"] <= 1.0


def test_after_step_can_stop_the_epoch(run):
    _, t = run
    state = RunState(epoch=1)
    stats = train_one_epoch(t.net, t.criterion, t.train_loader, state, **_parts(t), after_step=lambda s, losses: True)
    assert stats is None and state.epoch_step == 1


def test_run_state_round_trip():
    state = RunState(
        epoch=2, step=17, epoch_step=3, best_map=0.25, bad_steps=1, sums=EpochSums(1.5, 0.5, 1.0, 3, 1, 12)
    )
    assert RunState.from_dict(state.to_dict()) == state


def test_fault_injector_reads_the_environment_once():
    assert FaultInjector.from_environment(1, {}) is None
    assert FaultInjector.from_environment(1, {"DETECTOR_FAULT_AT_STEP": "5"}) == FaultInjector(5)
    oom = {"DETECTOR_FAULT_AT_STEP": "5", "DETECTOR_FAULT_RANK": "0", "DETECTOR_FAULT_KIND": "oom"}
    assert FaultInjector.from_environment(0, oom) == FaultInjector(5, "oom")
    with pytest.raises(ValueError, match="DETECTOR_FAULT_KIND"):
        FaultInjector.from_environment(0, {**oom, "DETECTOR_FAULT_KIND": "segv"})
    assert FaultInjector.from_environment(0, {"DETECTOR_FAULT_AT_STEP": "5"}) is None
    restarted = {"DETECTOR_FAULT_AT_STEP": "5", "TORCHELASTIC_RESTART_COUNT": "1"}
    assert FaultInjector.from_environment(1, restarted) is None


def test_num_classes_that_disagree_with_the_dataset_are_an_error(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    cfg = config.load(None, [*TINY_TRAIN, f"data.data_root={data}", "model.num_classes=90"])
    with pytest.raises(config.ConfigError, match="model.num_classes is 90, but .* has 5 categories"):
        build.build_datasets(cfg)


def test_step_settings_default_to_a_plain_cpu_step():
    s = StepSettings()
    assert s.device.type == "cpu" and not s.amp and s.clip_grad_norm == 0


def test_num_classes_zero_takes_the_training_sets(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    cfg = config.load(None, [*TINY_TRAIN, f"data.data_root={data}", "model.num_classes=0"])
    build.build_datasets(cfg, validate=False)
    assert cfg.model.num_classes == 5


def test_category_id_slots_index_labels_by_id(tmp_path):
    data = tiny_dataset(tmp_path / "data")  # category ids 3, 7, 11, 12, 20
    cfg = config.load(None, [*TINY_TRAIN, f"data.data_root={data}", "data.class_slots=category_id"])
    with pytest.raises(config.ConfigError, match="has 20 class slots"):
        build.build_datasets(cfg)
    cfg.model.num_classes = 20
    train_set, _ = build.build_datasets(cfg, validate=False)
    assert [c["id"] for c in train_set.categories] == list(range(1, 21))
    assert train_set.categories[2]["name"] == "circle" and train_set.categories[0]["name"] == "N/A"
    labels = torch.cat([torch.as_tensor(r.labels) for r in train_set.records])
    assert set(labels.tolist()) <= {3, 7, 11, 12, 20}


def test_a_frozen_backbone_stays_put_then_learns(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    cfg = config.load(None, [*TINY_TRAIN, f"data.data_root={data}", "train.freeze_backbone_epochs=1"])
    train_set, _ = build.build_datasets(cfg, validate=False)
    t = build_training(cfg, train_set, None, DistInfo())
    backbone = {k: v.clone() for k, v in t.model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in t.model.cls_heads.state_dict().items()}
    state = RunState()
    train_one_epoch(t.net, t.criterion, t.train_loader, state, **_parts(t))
    for key, value in t.model.backbone.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, backbone[key]), key
    assert any(not torch.equal(v, head[k]) for k, v in t.model.cls_heads.state_dict().items())
    state.end_epoch()
    train_one_epoch(t.net, t.criterion, t.train_loader, state, **_parts(t))
    changed = [k for k, v in t.model.backbone.state_dict().items() if not torch.equal(v, backbone[k])]
    assert len(changed) > len(backbone) // 2


def test_backbone_learning_rate_multiplier():
    from detector.training.optim import build_optimizer

    model = build.build_model(config.ModelConfig(backbone="mobilenet_v3_small", num_classes=2))
    plain = build_optimizer(model, 0.2, 0.9, 1e-4)
    assert [g["lr"] for g in plain.param_groups] == [0.2, 0.2]  # the groups of older checkpoints
    split = build_optimizer(model, 0.2, 0.9, 1e-4, backbone_lr_mult=0.1)
    assert [g["lr"] for g in split.param_groups] == pytest.approx([0.2, 0.2, 0.02, 0.02])
    in_backbone = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in in_backbone for g in split.param_groups[2:] for p in g["params"])
    assert sum(len(g["params"]) for g in split.param_groups) == len(list(model.parameters()))
