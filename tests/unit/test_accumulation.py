"""Gradient accumulation (train.micro_batch), the auto micro-batch under simulated out-of-memory errors, loader
workers by core count, and the out-of-memory message."""

import math
from pathlib import Path

import pytest
import torch

from detector import build, checkpoint, config
from detector.training import capacity, loop
from detector.training.distributed import DistInfo
from detector.training.engine import train_one_epoch
from detector.training.loop import OutOfMemory, StopRequest, fit, out_of_memory_message
from detector.training.run_log import RunLog
from detector.training.sampler import ResumableSampler
from detector.training.setup import build_training
from detector.training.state import RunState

from ..data_fixtures import TINY_TRAIN, tiny_dataset

# One step of 16 images; BatchNorm frozen, so that micro-batches see the same statistics as the whole batch.
ONE_STEP = [*TINY_TRAIN, "train.batch_size=16", "train.freeze_bn=true", "train.epochs=1", "train.clip_grad_norm=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data"), train=16)


def _training(data, *sets):
    cfg = config.load(None, [*ONE_STEP, f"data.data_root={data}", *sets])
    train_set, _ = build.build_datasets(cfg, validate=False)
    torch.manual_seed(0)
    return build_training(cfg, train_set, None, DistInfo())


def _one_step(t):
    losses = []
    state = RunState()
    train_one_epoch(t.net, t.criterion, t.train_loader, state, t.optim, t.settings,
                    after_step=lambda s, step_losses: losses.append(step_losses) or True)  # fmt: skip
    return state, losses[0]


@pytest.mark.parametrize("loss", ["focal", "softmax_hnm"])
def test_micro_batches_of_4_step_as_the_whole_batch_of_16(data, loss):
    whole = _training(data, f"loss.kind={loss}")
    split = _training(data, f"loss.kind={loss}", "train.micro_batch=4")
    assert (whole.train_loader.batch_size, whole.settings.micro_batches) == (16, 1)
    assert (split.train_loader.batch_size, split.settings.micro_batches) == (4, 4)
    for a, b in zip(whole.model.parameters(), split.model.parameters()):
        assert torch.equal(a, b)  # the same start
    state_a, losses_a = _one_step(whole)
    state_b, losses_b = _one_step(split)
    assert state_a.step == state_b.step == 1 and state_a.sums.images == state_b.sums.images == 16
    for key in losses_a:
        assert losses_b[key] == pytest.approx(losses_a[key], rel=1e-5)
    moved = 0
    for (name, a), b in zip(whole.model.named_parameters(), split.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
        moved += not torch.equal(a, b) or a.grad is not None
    assert moved  # the step changed the weights (else equality would be empty)


def test_per_micro_batch_normalisation_would_differ(data):
    """The property the equality rests on: each micro-batch's loss is divided by the whole batch's matched
    anchors. Divided by its own count instead, the same split gives a different loss."""
    t = _training(data)
    images, targets = next(iter(t.train_loader))
    labels, codes = t.criterion.match(targets, t.model.anchors)
    with torch.no_grad():
        box, logits = t.model(images.permute(0, 3, 1, 2).float() / 255)
    whole = t.criterion.compute(box, logits, labels, codes, max(1.0, (labels > 0).sum().item()))["total"]
    parts = [t.criterion(box[i : i + 4], logits[i : i + 4], t.model.anchors, targets[i : i + 4])["total"]
             for i in range(0, 16, 4)]  # fmt: skip
    assert not math.isclose(sum(parts) / 4, whole.item(), rel_tol=1e-3)


def test_micro_batches_must_divide_the_share(data):
    with pytest.raises(config.ConfigError, match=r"batch_size 16 is not a multiple of train.micro_batch 6 x 1 "):
        _training(data, "train.micro_batch=6")
    more = _training(data, "train.micro_batch=32")  # more than the share: the share, in one pass
    assert (more.train_loader.batch_size, more.settings.micro_batches) == (16, 1)
    with pytest.raises(config.ConfigError, match="BatchNorm needs at least 2 images"):
        config.load(None, ["train.micro_batch=1"])


def test_auto_on_the_cpu_keeps_the_whole_share(data):
    t = _training(data, "train.micro_batch=auto")
    assert (t.train_loader.batch_size, t.settings.micro_batches) == (16, 1)
    # checkpoints carry the size auto chose, so that a resumed run takes the same micro-batches
    assert t.config["train"]["micro_batch"] == 16
    assert _training(data, "train.micro_batch=8").config["train"]["micro_batch"] == 8


def test_one_image_per_forward_pass_is_refused_unless_batchnorm_is_frozen(data):
    with pytest.raises(
        config.ConfigError, match=r"train.batch_size 1 over 1 process puts 1 image .* train.freeze_bn=true"
    ):
        _training(data, "train.batch_size=1", "train.freeze_bn=false")
    assert _training(data, "train.batch_size=1").train_loader.batch_size == 1  # frozen (ONE_STEP): allowed


def test_the_sampler_cuts_epochs_to_whole_steps_and_resumes_inside_them():
    sampler = ResumableSampler(range(23), num_replicas=2, rank=0, seed=0, step_images=4)
    assert len(sampler) == 8  # 11 images per process, two steps of 4
    first = list(sampler)
    sampler.skip = 4
    assert list(sampler) == first[4:] and list(sampler) == first  # skip applies to one epoch


def oom_above(limit: int, per_image: int = 100, before: int = 1000):
    """A trial that raises out-of-memory above ``limit`` images and otherwise returns a peak linear in them."""
    calls = []

    def trial(m: int) -> int:
        calls.append(m)
        if m > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return before + per_image * m

    return trial, calls


def test_auto_halves_on_out_of_memory_until_it_fits():
    trial, calls = oom_above(40)
    choice = capacity.choose_micro_batch(512, trial, capacity=10**6, before=1000)
    assert calls == [512, 256, 128, 64, 32] and choice.micro_batch == 32
    assert choice.per_image == 100 and choice.peak == 1000 + 3200 and choice.tried == (512, 256, 128, 64, 32)
    line = choice.line(512, (320, 320))
    assert line.startswith("train.micro_batch auto: 32 images per forward pass, 16 per optimiser step of 512")


def test_auto_leaves_headroom_and_keeps_to_divisors():
    # 96 images fit but peak past 85 % of the memory: the size its memory per image allows, a divisor of 96
    trial, calls = oom_above(96, per_image=100, before=0)
    choice = capacity.choose_micro_batch(96, trial, capacity=8000)
    assert calls == [96, 48] and choice.micro_batch == 48  # 6800 / 100 = 68 -> 48, the divisor below
    assert 96 % choice.micro_batch == 0 and choice.peak <= 0.85 * 8000


def test_auto_tries_the_divisors_halving_skipped():
    # 96 and 48 do not fit, 24 does: halving skipped 32, which fits too
    trial, calls = oom_above(40)
    choice = capacity.choose_micro_batch(96, trial, capacity=10**6, before=1000)
    assert calls == [96, 48, 24, 32] and choice.micro_batch == 32 and choice.tried == (96, 48, 24, 32)
    # 120: 60 does not fit, 30 does; 40 (the largest divisor below 60) fits too
    trial, calls = oom_above(59)
    assert capacity.choose_micro_batch(120, trial, capacity=10**6).micro_batch == 40 and calls == [120, 60, 30, 40]
    # the fitting pass's memory per image bounds the search: 30 images peak at 3,000 of the 3,400 allowed (85 % of
    # 4,000), so at most 34: 40 is not tried
    trial, calls = oom_above(59, before=0)
    assert capacity.choose_micro_batch(120, trial, capacity=4000).micro_batch == 30 and calls == [120, 60, 30]


def test_out_of_memory_is_recognised_in_the_forms_cuda_libraries_raise():
    assert capacity.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert capacity.is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert capacity.is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate`"))
    assert not capacity.is_out_of_memory(RuntimeError("Expected more than 1 value per channel when training"))
    assert not capacity.is_out_of_memory(ValueError("CUDA out of memory"))

    def failing(m: int) -> int:
        if m > 8:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):  # anything else is not taken for a lack of memory
        capacity.choose_micro_batch(16, failing, capacity=10**6)


def test_a_smaller_micro_batch_keeps_batchnorm_training_where_one_divides_the_step():
    assert capacity.smaller_micro_batch(512, 64, False) == (32, False)
    assert capacity.smaller_micro_batch(96, 48, False) == (24, False)
    assert capacity.smaller_micro_batch(6, 3, False) == (2, False)  # not 1 with BatchNorm frozen
    assert capacity.smaller_micro_batch(14, 7, False) == (2, False)
    assert capacity.smaller_micro_batch(16, 2, False) == (1, True)
    assert capacity.smaller_micro_batch(16, 2, True) == (1, False)  # frozen already
    assert capacity.smaller_micro_batch(16, 1, True) is None


def test_auto_says_when_nothing_fits():
    trial, calls = oom_above(1)
    with pytest.raises(capacity.MicroBatchTooLarge, match=r"not even 2 images .* \(tried 64, 32, 16, 8, 4, 2\)"):
        capacity.choose_micro_batch(64, trial, capacity=10**6)
    assert capacity.largest_divisor(48, 20) == 16 and capacity.largest_divisor(7, 3) == 1


def test_auto_workers_share_the_cores():
    assert capacity.auto_workers("cuda", 1, cores=16) == 8  # capped
    assert capacity.auto_workers("cuda", 4, cores=16) == 3  # 4 cores each, one for the training loop
    assert capacity.auto_workers("cuda", 8, cores=8) == 1  # at least one
    assert capacity.auto_workers("cpu", 1, cores=2) == 0  # the model's threads need the cores
    assert capacity.auto_workers("cpu", 1, cores=32) == 8
    assert 1 <= capacity.available_cores()


def test_workers_auto_in_a_cpu_recipe(data):
    t = _training(data, "data.workers=auto")
    assert t.train_loader.num_workers == capacity.auto_workers("cpu", 1)


def test_one_worker_rate_is_measured_on_the_dataset(data):
    cfg = config.load(None, [*ONE_STEP, f"data.data_root={data}"])
    train_set, _ = build.build_datasets(cfg, validate=False)
    assert capacity.worker_images_per_s(train_set, images=6) > 0
    line = capacity.loader_line(train_set, workers=3)
    assert line.startswith("data: one loader worker prepares ") and ", so 3 workers about " in line


def test_the_out_of_memory_line_names_the_micro_batch_and_the_fix(data):
    t = _training(data, "train.micro_batch=8")
    state = RunState(epoch=2, step=41)
    line = out_of_memory_message(t, state, "in step 42 (epoch 3)", Path("runs/x/last.pt"))
    assert "\n" not in line and "in step 42 (epoch 3) with train.micro_batch 8 (2 per step of 16" in line
    assert "continue from runs/x/last.pt with --resume runs/x/last.pt --set train.micro_batch=4" in line
    assert "no checkpoint was written yet" in out_of_memory_message(t, state, "in step 1 (epoch 1)", None)
    training_bn = _training(data, "train.micro_batch=2", "train.freeze_bn=false")
    assert out_of_memory_message(training_bn, state, "", None).endswith(
        "--set train.micro_batch=1 train.freeze_bn=true"
    )
    frozen = _training(data, "train.micro_batch=2")  # BatchNorm frozen already (ONE_STEP)
    assert out_of_memory_message(frozen, state, "", None).endswith("--set train.micro_batch=1")


def test_out_of_memory_in_the_evaluation_keeps_the_epoch(data, tmp_path, monkeypatch):
    """An epoch's training is whole before its evaluation: an out-of-memory error there saves it in last.pt."""
    cfg = config.load(None, [*ONE_STEP, f"data.data_root={data}", "train.micro_batch=8"])
    train_set, val_set = build.build_datasets(cfg)
    torch.manual_seed(0)
    t = build_training(cfg, train_set, val_set, DistInfo())

    def evaluate(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated). Tried to allocate 1.00 GiB")

    monkeypatch.setattr(loop, "evaluate", evaluate)
    state = RunState()
    with pytest.raises(OutOfMemory) as caught:
        fit(t, state, tmp_path, RunLog(tmp_path, True, True, 20), StopRequest())
    line = str(caught.value)
    assert "\n" not in line and line.startswith("out of memory on cpu in the evaluation after epoch 1, ")
    assert f"{tmp_path / 'last.pt'} holds the end of epoch 1" in line and "--no-val" in line
    saved = checkpoint.load(tmp_path / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 1)
    for name, value in t.model.state_dict().items():
        assert torch.equal(saved["model"][name], value), name
