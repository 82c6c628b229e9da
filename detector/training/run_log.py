"""The run's records on the main process: one JSON line per epoch in DIR/log.jsonl, the log line, and
TensorBoard scalars under DIR/tb when tensorboard is installed (it is optional)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class RunLog:
    def __init__(self, out_dir: Path, enabled: bool, fresh: bool, log_every: int) -> None:
        """``enabled``: this process writes (the main one); ``fresh``: a new run, which starts a new log."""
        self.path, self.enabled, self.log_every = Path(out_dir) / "log.jsonl", enabled, log_every
        self.tb = _tensorboard(Path(out_dir) / "tb") if enabled else None
        if enabled and fresh:
            self.path.unlink(missing_ok=True)

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        """Per-step scalars, every ``log_every`` steps."""
        if self.tb is None or step % self.log_every:
            return
        for key, value in (("loss", losses["total"]), ("box_loss", losses["box"]), ("cls_loss", losses["cls"])):
            self.tb.add_scalar(f"train/{key}", value, step)
        self.tb.add_scalar("train/lr", lr, step)

    def epoch(self, epoch: int, stats: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, **stats}) + "\n")
        if self.tb is not None:
            for key, value in stats.items():
                self.tb.add_scalar(f"epoch/{key}", value, epoch)
            self.tb.flush()
        rounded = {k: round(v, 5) if isinstance(v, float) else v for k, v in stats.items()}
        log.info("epoch %d: %s", epoch, json.dumps(rounded))


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))
