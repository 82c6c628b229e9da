"""tools/train_coco.py: what a run writes, resuming bit-exactly, and two processes with micro-batches computing
what one does with the whole batch."""

import json
import os
import sys

import torch

from detector import checkpoint

from ..conftest import ROOT, tool_in_process
from ..data_fixtures import TINY_TRAIN, tiny_dataset


def _train(out, data, *extra, sets=()):
    """tools/train_coco.py in this process (the runs in new processes are in test_faults_training.py)."""
    return tool_in_process("tools/train_coco.py", "--data-root", str(data), "--output-dir", str(out), "--set",
                           *TINY_TRAIN, *sets, *extra)  # fmt: skip


def test_train_writes_checkpoints_log_and_config(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    result = _train(tmp_path / "run", data, "--set", "train.weight_decay=0.0001")  # a second --set adds to the first
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert "weight_decay: 0.0001" in (tmp_path / "run" / "config.yaml").read_text()
    assert all(k in lines[-1] for k in ("loss", "box_loss", "cls_loss", "lr", "images_per_s", "AP", "AP50"))
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "rng", "config", "categories"):
        assert key in ckpt
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"]["num_classes"] == 5
    assert [c["id"] for c in ckpt["categories"]] == [3, 7, 11, 12, 20]
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "config.yaml").is_file()


def test_resume_is_bit_exact(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    full = _train(tmp_path / "full", data, sets=["train.eval_every=0"])
    assert full.returncode == 0, full.stderr[-3000:]
    first = _train(tmp_path / "split", data, "--stop-after-epoch", "1", sets=["train.eval_every=0"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert checkpoint.load(tmp_path / "split" / "last.pt")["epoch"] == 1
    second = tool_in_process("tools/train_coco.py", "--resume", str(tmp_path / "split" / "last.pt"))
    assert second.returncode == 0, second.stderr[-3000:]
    a = checkpoint.load(tmp_path / "full" / "last.pt")
    b = checkpoint.load(tmp_path / "split" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    la = [json.loads(x)["loss"] for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert la == lb


def test_two_processes_with_micro_batches_follow_one_process(tmp_path):
    """2 torchrun processes x 2 micro-batches of 4 = one process with one batch of 16: the same weights."""
    data = tiny_dataset(tmp_path / "data", train=16)
    # BatchNorm frozen: CPU has no SyncBatchNorm, and per-micro-batch statistics would differ legitimately.
    sets = ["train.batch_size=16", "train.freeze_bn=true", "train.eval_every=0", "train.freeze_backbone_epochs=1"]
    one = _train(tmp_path / "one", data, "--no-val", sets=sets)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29611"]
    import subprocess

    two = subprocess.run(
        [
            *torchrun,
            "tools/train_coco.py",
            "--data-root",
            str(data),
            "--output-dir",
            str(tmp_path / "two"),
            "--no-val",
            "--set",
            *TINY_TRAIN,
            *sets,
            "train.micro_batch=4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "gradient accumulation: 2 forward passes of 4 images per optimiser step (8 images per process" in two.stderr
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 2  # two epochs of one step: the first with the backbone frozen
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-5, atol=0)
    wa = checkpoint.load(tmp_path / "one" / "last.pt")["model"]
    wb = checkpoint.load(tmp_path / "two" / "last.pt")["model"]
    for key, value in wa.items():
        if value.is_floating_point():
            torch.testing.assert_close(wb[key], value, rtol=1e-5, atol=1e-7, msg=key)
