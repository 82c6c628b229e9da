"""What a training run is at a given moment, beyond the weights: counters, running sums, random states.

``RunState`` travels in every training checkpoint (``RunState.to_dict``), so a resumed run continues
bit-exactly on the CPU: same batches, same augmentation draws, same log lines.
"""

from __future__ import annotations

import ast
import dataclasses
import random
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class EpochSums:
    """Running sums over the steps of the current epoch (float64 Python numbers, summed in step order)."""

    loss: float = 0.0
    box_loss: float = 0.0
    cls_loss: float = 0.0
    steps: int = 0  # steps taken
    skipped: int = 0  # steps skipped for a non-finite loss
    images: int = 0  # images seen by all processes

    def add(self, losses: dict[str, float] | None, images: int) -> None:
        if losses is None:
            self.skipped += 1
        else:
            self.loss += losses["total"]
            self.box_loss += losses["box"]
            self.cls_loss += losses["cls"]
            self.steps += 1
        self.images += images


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    epoch_step: int = 0  # batches done in the current epoch (non-zero only in mid-epoch checkpoints)
    best_map: float = -1.0  # best validation AP so far (-1: none yet)
    bad_steps: int = 0  # non-finite losses in a row
    sums: EpochSums = field(default_factory=EpochSums)

    def end_epoch(self) -> None:
        self.epoch, self.epoch_step, self.sums = self.epoch + 1, 0, EpochSums()

    def to_dict(self) -> dict:
        """Plain data for a checkpoint: ``epoch``, ``step``, ``epoch_step``, ``best_map``, ``bad_steps`` and
        ``epoch_sums`` (a dict of the named sums)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "sums"}
        return {**out, "epoch_sums": dataclasses.asdict(self.sums)}

    @classmethod
    def from_dict(cls, ckpt: dict) -> RunState:
        return cls(
            epoch=ckpt["epoch"],
            step=ckpt["step"],
            epoch_step=ckpt.get("epoch_step", 0),
            best_map=ckpt["best_map"],
            bad_steps=ckpt.get("bad_steps", 0),
            sums=EpochSums(**ckpt.get("epoch_sums", {})),
        )


def rng_state() -> dict:
    """Torch CPU/CUDA, numpy and Python random states, as tensors and plain data (weights_only-loadable)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    version, internal, gauss = ast.literal_eval(state["python"])  # literals only: nothing can run
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
