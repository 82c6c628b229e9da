"""Live sources that disappear or stall, and long videos: outputs finalised, memory flat."""

import http.server
import json
import socketserver
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from ..conftest import ROOT
from .test_detect import ENV, detect, video_args
from .test_detect import weights as weights  # noqa: F401 - a fixture


class MJPEGCamera:
    """An IP camera on loopback: a multipart MJPEG stream of ``frames`` frames, then it is unplugged
    (connection closed) or, with ``stall``, it stops sending but keeps the connection open."""

    def __init__(self, frames: int, stall: bool = False, fps: float = 30.0) -> None:
        jpegs = [
            cv2.imencode(".jpg", np.full((96, 128, 3), (i * 7) % 255, np.uint8))[1].tobytes() for i in range(frames)
        ]
        released = threading.Event()
        self.released = released

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for jpg in jpegs:
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n"
                        self.wfile.write(head.encode() + jpg + b"\r\n")
                        time.sleep(1 / fps)
                    if stall:
                        released.wait(60)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("stall", [False, True])
def test_camera_that_disappears_mid_stream_finalises_the_video(weights, tmp_path, stall):
    camera = MJPEGCamera(frames=40, stall=stall)
    try:
        result = detect(
            *video_args(camera.url, weights, tmp_path / "out", tmp_path / "dets.jsonl"),
            "--conf",
            "0.2",
            "--live-timeout",
            "2",
        )
    finally:
        camera.close()
    assert result.returncode == 0, result.stderr[-2000:]
    message = "seems gone" if stall else "stopped delivering frames"
    assert message in result.stderr and "Traceback" not in result.stderr
    videos = list((tmp_path / "out").glob("*.mp4"))
    assert len(videos) == 1 and not list((tmp_path / "out").glob(".*partial*"))
    cap = cv2.VideoCapture(str(videos[0]))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, _ = cap.read()
    cap.release()
    lines = (tmp_path / "dets.jsonl").read_text().splitlines()
    assert ok and frames == len(lines) > 0
    assert all(json.loads(line)["width"] == 128 for line in lines)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_long_video_keeps_memory_flat(weights, tmp_path):
    video = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 48))
    rng = np.random.default_rng(0)
    tiles = [cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (64, 48)) for _ in range(50)]
    for i in range(20_000):
        writer.write(tiles[i % 50])
    writer.release()
    cmd = [
        sys.executable,
        "tools/detect.py",
        *video_args(video, weights, tmp_path / "out", tmp_path / "dets.jsonl"),
        "--conf",
        "0.9",
    ]
    log = open(tmp_path / "detect.log", "w")  # a file, not a pipe: an unread pipe would block the tool
    env = {**ENV, "PYTHONUNBUFFERED": "1"}  # the summary line reaches the log when printed
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    samples = []
    # Sample until the summary line: after it comes the interpreter's exit, where PyTorch's teardown alone
    # raises RSS by about 100 MB for a moment (measured with a bare `import torch`), which is not growth.
    while proc.poll() is None:
        time.sleep(1.0)
        if " frames in " in (tmp_path / "detect.log").read_text(errors="replace"):
            break
        try:
            samples.append(_rss_mb(proc.pid))
        except (OSError, RuntimeError):
            break
    proc.wait()
    log.close()
    assert proc.returncode == 0, (tmp_path / "detect.log").read_text()[-2000:]
    assert len((tmp_path / "dets.jsonl").read_text().splitlines()) == 20_000
    warm = samples[len(samples) // 10 :]  # after warm-up
    series = ", ".join(f"{x:.0f}" for x in samples)
    assert max(warm) - warm[0] < 50, f"RSS grew from {warm[0]:.0f} to {max(warm):.0f} MB; each second: {series}"
