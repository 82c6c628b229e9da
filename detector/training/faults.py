"""Fault injection for the reliability tests, read once from the environment, run as a step hook.

``DETECTOR_FAULT_AT_STEP=N`` makes the process of rank ``DETECTOR_FAULT_RANK`` (default 1) fail once it has
taken step N, on torchrun's first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0), so that a restart must
recover the run. ``DETECTOR_FAULT_KIND``: ``exit`` (default: the process exits with status 17) or ``oom`` (the
model's next forward pass raises ``torch.cuda.OutOfMemoryError``, as a CUDA allocation that does not fit does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class FaultInjector:
    at_step: int
    kind: str = "exit"
    armed: bool = field(default=False, init=False)

    @classmethod
    def from_environment(cls, rank: int, env: Mapping[str, str] = os.environ) -> FaultInjector | None:
        """The injector this process should run, or None (no fault asked for, another rank, or a restart)."""
        at = env.get("DETECTOR_FAULT_AT_STEP")
        if at is None or rank != int(env.get("DETECTOR_FAULT_RANK", "1")):
            return None
        kind = env.get("DETECTOR_FAULT_KIND", "exit")
        if kind not in ("exit", "oom"):
            raise ValueError(f"DETECTOR_FAULT_KIND: unknown {kind!r}; expected exit or oom")
        return cls(int(at), kind) if env.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" else None

    def attach(self, model: nn.Module) -> None:
        """For ``oom``: the model's forward pass raises once the injector is armed."""
        if self.kind == "oom":
            model.register_forward_pre_hook(self._forward)

    def _forward(self, module: nn.Module, args: tuple) -> None:
        if self.armed:
            self.armed = False
            log.error("injected fault: out of memory after step %d", self.at_step)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected). Tried to allocate 2.00 GiB")

    def __call__(self, step: int) -> None:
        if step != self.at_step:
            return
        if self.kind == "oom":
            self.armed = True
        else:
            log.error("injected fault: exit at step %d", step)
            os._exit(17)
