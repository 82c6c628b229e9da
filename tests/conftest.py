import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


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


def run_tool(*args: str, **kwargs):
    """Run ``python tools/<args>`` from the repository root; returns the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kwargs)
