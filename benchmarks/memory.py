"""The resident memory of each runtime: one fresh process per runtime loads the model file, runs 20 frames at
1 thread and reports its resident set (VmRSS) and peak (VmHWM), in MB. Separate processes, so that one
runtime's libraries and arenas do not count against another; each includes Python, torch (our
post-processing uses it) and the runtime's own libraries, as ``tools/detect.py`` would hold them (Linux only:
/proc/self/status)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
import detector
from detector.data.synthetic import synthetic_frames
model = detector.load(sys.argv[1], runtime=sys.argv[2], threads=1)
frames = synthetic_frames(1)
for _ in range(20):
    model(frames)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}))
"""


def resident_mb(files: dict[str, tuple[Path, str]], timeout_s: float = 300) -> dict[str, dict[str, float]]:
    """{path: {"VmRSS": MB, "VmHWM": MB}} for each ``path: (model file, runtime name)``."""
    if not Path("/proc/self/status").exists():
        return {}
    root = Path(__file__).resolve().parents[1]
    out = {}
    for path, (file, runtime) in files.items():
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(file), runtime], capture_output=True, text=True,
                              timeout=timeout_s, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{path}: the memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
        out[path] = {k: round(v, 1) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    return out
