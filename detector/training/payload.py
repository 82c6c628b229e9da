"""A training checkpoint's payload: what it holds beyond ``detector.checkpoint``'s format, and its restore.

Keys: ``model`` (state dict), ``config`` (the resolved Config as plain data), ``categories`` (label order),
``optimizer``, ``scheduler``, ``scaler``, ``ema`` (state dicts, ``ema`` None without EMA), the ``RunState``
fields (``epoch``, ``step``, ``epoch_step``, ``best_map``, ``bad_steps``, ``epoch_sums``) and ``rng`` (every
random generator). With it, training continues exactly where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from detector import checkpoint
from detector.errors import UserError
from detector.training.optim import Optimisation
from detector.training.state import RunState, rng_state, set_rng_state

log = logging.getLogger(__name__)


def training_payload(model: nn.Module, config: dict, categories: list[dict], optim: Optimisation,
                     state: RunState) -> dict:  # fmt: skip
    return {
        "model": model.state_dict(),
        "config": config,
        "categories": categories,
        "optimizer": optim.optimizer.state_dict(),
        "scheduler": optim.scheduler.state_dict(),
        "scaler": optim.scaler.state_dict(),
        "ema": optim.ema.state_dict() if optim.ema is not None else None,
        **state.to_dict(),
        "rng": rng_state(),
    }


def restore_training(ckpt: dict, model: nn.Module, optim: Optimisation) -> RunState:
    """Load every state of ``ckpt`` into the objects given (random generators included); its RunState."""
    model.load_state_dict(ckpt["model"])
    optim.optimizer.load_state_dict(ckpt["optimizer"])
    optim.scheduler.load_state_dict(ckpt["scheduler"])
    optim.scaler.load_state_dict(ckpt["scaler"])
    if optim.ema is not None and ckpt.get("ema") is not None:
        optim.ema.load_state_dict(ckpt["ema"])
    state = RunState.from_dict(ckpt)
    set_rng_state(ckpt["rng"])
    log.info("resumed at epoch %d, batch %d (step %d)", state.epoch + 1, state.epoch_step, state.step)
    return state


def find_resume(resume: str | None, output_dir: str | None) -> str | None:
    """``--resume PATH`` as given; with ``"auto"`` the newest readable checkpoint of ``output_dir`` (last.pt,
    else last.prev.pt), or None when there is none (a fresh start, as for torchrun restarts)."""
    if resume != "auto":
        return resume
    if not output_dir:
        raise UserError("--resume auto needs --output-dir")
    for name in ("last.pt", "last.prev.pt"):
        path = Path(output_dir) / name
        if path.is_file():
            try:
                checkpoint.load(path)
            except UserError as exc:
                log.warning("not resuming from %s: %s", path, exc)
                continue
            return str(path)
    return None
