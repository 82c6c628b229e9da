import contextlib
import io
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# The runtime choices and exports of ``--runtime auto`` (the default on the CPU) go to a folder of this test process,
# not the user's cache. Set on import, before any test module copies the environment for the tools it starts.
os.environ["DETECTOR_CACHE"] = tempfile.mkdtemp(prefix="detector_cache_")


@pytest.fixture(scope="session", autouse=True)
def _own_cache():
    yield
    shutil.rmtree(os.environ["DETECTOR_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def randomise_batchnorm(model: torch.nn.Module, mean: float = 0.1, bias: float = 0.5) -> None:
    """Trained-looking BatchNorm statistics and affine parameters (fresh ones are the identity), so that
    equality tests exercise them and scores spread out instead of tying."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-mean, mean)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-bias, bias)


def press_ctrl_c(signum: int = signal.SIGINT) -> None:
    """What Ctrl-C (or ``kill``, with SIGTERM) does to this process, in this thread: the handler installed now,
    called. A real signal sent to a pytest-xdist worker can reach it when no handler of ours is in place; real
    signals reach the tools in new processes (tests/tools/test_detect.py, tests/tools/test_faults_training.py)."""
    handler = signal.getsignal(signum)
    assert callable(handler), f"no Python handler for {signal.Signals(signum).name} ({handler!r})"
    handler(signum, None)


def run_tool(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python tools/<args>`` from the repository root in a new process; returns the CompletedProcess.

    For the tests whose point is the process: its exit status and one-line error with no traceback, signals,
    torchrun, a killed process. The others use ``tool_in_process`` (no interpreter start-up or imports: about
    4 s less per call on the 2-core machine)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kwargs)


class ToolTimeout(BaseException):
    """A tool run in this process ran past its time (a BaseException, so that no ``except Exception`` of the
    tool's own can swallow it)."""


def tool_in_process(tool: str, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    """``python tools/<tool> args`` in this process: the same argument parsing, logging, one-line errors and exit
    status (``cli.run``'s ``sys.exit``), stdout and stderr captured; returns a CompletedProcess like
    ``run_tool``. Logging and torch's threads are put back after the call; past ``timeout`` seconds it is
    stopped with ``ToolTimeout``."""

    def expired(signum: int, frame: object) -> None:
        raise ToolTimeout(f"{tool} {' '.join(args)} ran past {timeout:g} s")

    previous_alarm = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    out, err = io.StringIO(), io.StringIO()
    handlers, level, argv, threads = logging.root.handlers[:], logging.root.level, sys.argv, torch.get_num_threads()
    logging.root.handlers.clear()
    sys.argv, code = [tool, *args], 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / tool), run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)  # as the interpreter prints sys.exit("message")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        sys.argv = argv
        torch.set_num_threads(threads)
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    return subprocess.CompletedProcess([tool, *args], code, out.getvalue(), err.getvalue())
