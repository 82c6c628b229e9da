"""Interrupted training and numerical faults: nothing lost, clear messages, exact continuation."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from detector import checkpoint
from detector.errors import UserError

from ..conftest import ROOT, tool_in_process
from ..data_fixtures import TINY_TRAIN, tiny_dataset

LONG = [*TINY_TRAIN, "train.batch_size=2", "train.epochs=3", "train.eval_every=0"]


def _train_args(data, out, *sets):
    """tools/train_coco.py on ``data`` into ``out``, no validation, with the ``--set`` overrides ``sets``."""
    return ["tools/train_coco.py", "--data-root", str(data), "--output-dir", str(out), "--no-val", "--set", *sets]


def _train(data, out, *sets):
    """A run to completion, in this process (the interrupted runs are new processes)."""
    return tool_in_process(*_train_args(data, out, *sets))


def _start(data, out, sets=()):
    """The LONG training as a background process, to be interrupted."""
    cmd = [sys.executable, *_train_args(data, out, *LONG, *sets)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - start < timeout
        time.sleep(0.05)


def _resume_auto(out, data):
    return tool_in_process(
        "tools/train_coco.py", "--resume", "auto", "--output-dir", str(out), "--data-root", str(data), "--no-val"
    )


def _losses(out):
    return [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()]


def test_sigint_saves_mid_epoch_and_resume_is_exact(tmp_path):
    data = tiny_dataset(tmp_path / "data", train=32)
    accumulate = ["train.batch_size=4", "train.micro_batch=2"]  # steps of two micro-batches
    full = _train(data, tmp_path / "full", *LONG, *accumulate)
    assert full.returncode == 0, full.stderr[-3000:]
    proc = _start(data, tmp_path / "cut", sets=[*accumulate, "train.checkpoint_every=5"])
    _wait_for(tmp_path / "cut" / "last.pt", proc)  # after step 5, inside epoch 1 (8 steps per epoch)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "continue with --resume" in err and "Traceback" not in err
    saved = checkpoint.load(tmp_path / "cut" / "last.pt")
    assert 0 < saved["step"] < 24
    resumed = tool_in_process("tools/train_coco.py", "--resume", str(tmp_path / "cut" / "last.pt"), "--no-val")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = checkpoint.load(tmp_path / "full" / "last.pt"), checkpoint.load(tmp_path / "cut" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")


def test_sigkill_mid_epoch_leaves_a_checkpoint_to_resume(tmp_path):
    data = tiny_dataset(tmp_path / "data", train=16)
    proc = _start(data, tmp_path / "run", sets=["train.checkpoint_every=1"])
    _wait_for(tmp_path / "run" / "last.prev.pt", proc)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    good = [p for p in ("last.pt", "last.prev.pt") if _loads(tmp_path / "run" / p)]
    assert good, "no loadable checkpoint after SIGKILL"
    resumed = _resume_auto(tmp_path / "run", data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == 3


def _loads(path):
    try:
        checkpoint.load(path)
        return True
    except UserError:
        return False


WRITER = """
import sys, torch
from detector import checkpoint
i = 0
while True:
    i += 1
    checkpoint.save(sys.argv[1], {"model": {"w": torch.full((6_000_000,), float(i))}, "config": {},
                                  "categories": [], "i": i}, keep_previous=True)
"""


def test_sigkill_mid_write_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT)
        while not path.exists():
            time.sleep(0.01)
        time.sleep(0.3 + 0.17 * attempt)  # writes of 24 MB take a fraction of a second: the kill lands mid-write
        proc.kill()
        proc.wait()
        ckpt = checkpoint.load(path)  # last.pt is always there and complete
        assert torch.all(ckpt["model"]["w"] == ckpt["i"])
        prev = checkpoint.previous_path(path)
        if prev.exists():
            assert checkpoint.load(prev)["i"] <= ckpt["i"]  # equal when killed between its two renames
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("last.pt", "last.prev.pt")]
    assert all(name.endswith((".tmp", ".tmp.prev")) for name in leftovers)  # only unfinished temporaries


def test_out_of_memory_mid_run_ends_in_one_line_and_resumes(tmp_path, monkeypatch):
    data = tiny_dataset(tmp_path / "data", train=16)
    out = tmp_path / "run"
    sets = [*LONG, "train.batch_size=8", "train.micro_batch=4", "train.checkpoint_every=1"]  # 2 steps an epoch
    monkeypatch.setenv("DETECTOR_FAULT_AT_STEP", "3")  # the forward pass after step 3 runs out of memory
    monkeypatch.setenv("DETECTOR_FAULT_RANK", "0")
    monkeypatch.setenv("DETECTOR_FAULT_KIND", "oom")
    result = _train(data, out, *sets)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("error: out of memory on cpu in step 4 (epoch 2) with train.micro_batch 4 (2 per")
    assert f"continue from {out / 'last.pt'} with --resume {out / 'last.pt'} --set train.micro_batch=2" in errors[0]
    assert checkpoint.load(out / "last.pt")["step"] == 3  # as the last save left it
    for name in ("DETECTOR_FAULT_AT_STEP", "DETECTOR_FAULT_RANK", "DETECTOR_FAULT_KIND"):
        monkeypatch.delenv(name)
    resumed = tool_in_process("tools/train_coco.py", "--resume", str(out / "last.pt"), "--no-val", "--set",
                              "train.micro_batch=2")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = checkpoint.load(out / "last.pt")
    assert (done["epoch"], done["step"], done["config"]["train"]["micro_batch"]) == (3, 6, 2)


def test_corrupted_checkpoint_points_to_the_previous_one(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    run = _train(data, tmp_path / "run", *TINY_TRAIN)
    assert run.returncode == 0, run.stderr[-3000:]
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    result = tool_in_process("tools/train_coco.py", "--resume", str(last), "--no-val")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "truncated or corrupted" in result.stderr and "last.prev.pt" in result.stderr
    auto = _resume_auto(tmp_path / "run", data)
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert "not resuming from" in auto.stderr and checkpoint.load(last)["epoch"] == 2


def test_non_finite_losses_skip_steps_then_stop(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    result = _train(
        data,
        tmp_path / "run",
        *TINY_TRAIN,
        "train.lr=1e30",
        "train.warmup_iters=0",
        "train.max_bad_steps=2",
        "train.checkpoint_every=1",
        "train.epochs=3",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "non-finite loss at step" in result.stderr and "image ids of this batch" in result.stderr
    assert "non-finite losses in a row" in result.stderr and "Traceback" not in result.stderr
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    running = [v for k, v in ckpt["model"].items() if k.endswith("running_mean")]
    assert all(torch.isfinite(v).all() for v in running)  # skipped steps did not poison BatchNorm


@pytest.mark.slow
def test_torchrun_restarts_a_dead_worker_and_finishes(tmp_path):
    data = tiny_dataset(tmp_path / "data", train=16)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "--master_port=29623",
        "tools/train_coco.py",
        "--data-root",
        str(data),
        "--output-dir",
        str(tmp_path / "run"),
        "--resume",
        "auto",
        "--no-val",
        "--set",
        *LONG,
        "train.batch_size=4",
        "train.checkpoint_every=2",
    ]
    env = {**os.environ, "DETECTOR_FAULT_AT_STEP": "5", "DETECTOR_FAULT_RANK": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "injected fault" in result.stderr and "resumed at epoch" in result.stderr
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == 3
