"""Fault injection for the reliability tests, read once from the environment, run as a step hook.

``DETECTOR_FAULT_AT_STEP=N`` makes the process of rank ``DETECTOR_FAULT_RANK`` (default 1) exit with status
17 once it has taken step N, on torchrun's first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0), so that a
restart must recover the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultInjector:
    at_step: int

    @classmethod
    def from_environment(cls, rank: int, env: Mapping[str, str] = os.environ) -> FaultInjector | None:
        """The injector this process should run, or None (no fault asked for, another rank, or a restart)."""
        at = env.get("DETECTOR_FAULT_AT_STEP")
        if at is None or rank != int(env.get("DETECTOR_FAULT_RANK", "1")):
            return None
        return cls(int(at)) if env.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" else None

    def __call__(self, step: int) -> None:
        if step == self.at_step:
            log.error("injected fault: exit at step %d", step)
            os._exit(17)
