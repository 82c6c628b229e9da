import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def run_tool(*args: str, **kwargs):
    """Run ``python tools/<args>`` from the repository root; returns the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kwargs)
