"""Startup cost of the default COCO model: time from the command to the first detection, cached weights
(``python tools/benchmark.py startup [--runs 5] [--real]``).

Runs ``tools/detect.py IMAGE`` (no --weights: torchvision-coco) as a user would, in a fresh process each time,
against a hub cache holding a file of torchvision's architecture and size. With the real file cached
(``--real``, e.g. after one online run of detect.py) nothing is patched; without it the file is made here
from random weights, and the catalog is told that file's hash (the SHA-256 check still runs in full).
Prints the median wall time of the whole command, every run's, and the machine (CPU, cores, date, packages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from detector.data.synthetic import synthetic_frames
from detector.errors import UserError
from detector.inference.timing import machine
from detector.weights import catalog

ROOT = Path(__file__).resolve().parents[1]
# Runs detect.py in-process after pointing the catalog at the hash of the file made here.
PATCHED = """
import dataclasses, runpy, sys
from detector.weights import catalog, hub
e = catalog.CATALOG["torchvision-coco"]
catalog.CATALOG[e.name] = dataclasses.replace(e, sha256=hub.sha256_of(hub.cached_path(e)))
sys.argv = ["tools/detect.py", *sys.argv[1:]]
runpy.run_path("tools/detect.py", run_name="__main__")
"""


def make_cache(folder: Path) -> None:
    """A hub cache under ``folder`` holding a file of torchvision-coco's architecture and size, random weights."""
    entry = catalog.CATALOG["torchvision-coco"]
    path = folder / "hub" / "checkpoints" / entry.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict(), path)


def run(runs: int = 5, real: bool = False, threads: int = 1) -> dict:
    """The median wall time of ``runs`` fresh ``tools/detect.py IMAGE`` processes, and every run's."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = tmp / "frame.jpg"
        cv2.imwrite(str(image), cv2.cvtColor(synthetic_frames(1)[0], cv2.COLOR_RGB2BGR))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if not real:
            make_cache(tmp / "torch")
            env.update(TORCH_HOME=str(tmp / "torch"), DETECTOR_OFFLINE="1")
        command = [str(image), "--threads", str(threads), "--save-json", str(tmp / "d.jsonl")]
        command = ([sys.executable, "tools/detect.py"] if real else [sys.executable, "-c", PATCHED]) + command
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if done.returncode:
                raise UserError(f"tools/detect.py failed: {done.stderr.strip()[-2000:]}")
        first = json.loads((tmp / "d.jsonl").read_text().splitlines()[0])
    return {
        "weights": "torchvision-coco (real file)" if real else "torchvision-coco architecture, random weights",
        "runs": runs,
        "command_to_detection_s_median": round(statistics.median(times), 3),
        "all_s": [round(t, 3) for t in times],
        "detections_in_first_frame": len(first["detections"]),
        "machine": machine(),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--real", action="store_true", help="use the real torchvision-coco file of $TORCH_HOME")
    p.add_argument("--threads", type=int, default=1)


def main(args: argparse.Namespace) -> int:
    print(json.dumps(run(args.runs, args.real, args.threads), indent=1))
    return 0
