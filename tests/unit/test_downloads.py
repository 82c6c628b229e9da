"""Named weights over a real HTTP server on 127.0.0.1 started here: a good file, a dropped connection, a stalled
server, 404 and 500, wrong bytes, a mirror, two processes fetching at once; user catalogs and their checks."""

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from detector.errors import UserError
from detector.weights import catalog, hub
from detector.weights.catalog import NamedWeights

from ..conftest import ROOT

BODY = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(BODY).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/NAME the body; /drop/NAME half of it, then the connection closes; /stall/NAME headers, then silence;
    /status/CODE/NAME that status; /wrong/NAME other bytes; /slow/NAME the body in 16 pieces, 50 ms apart."""

    requests: list[str] = []
    files: dict[str, bytes] = {}  # a file name -> the body served for it (default BODY)

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Handler.requests.append(self.path)
        parts = self.path.strip("/").split("/")
        mode = parts[0]
        if mode == "status":
            self.send_error(int(parts[1]))
            return
        body = b"not the weights" * 1000 if mode == "wrong" else Handler.files.get(parts[-1], BODY)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif mode == "stall":
            self.wfile.write(body[:1000])
            self.wfile.flush()
            time.sleep(3)  # longer than the test's timeout; bounded, so the server thread ends
        elif mode == "slow":
            for i in range(16):
                self.wfile.write(body[i * len(body) // 16 : (i + 1) * len(body) // 16])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.requests, Handler.files = [], {}
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(hub.OFFLINE_VARIABLE, raising=False)
    monkeypatch.delenv(hub.MIRROR_VARIABLE, raising=False)
    monkeypatch.setenv(hub.TIMEOUT_VARIABLE, "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def entry(url: str, sha256: str = DIGEST) -> NamedWeights:
    return NamedWeights("team-model", url, sha256, len(BODY), "checkpoint", "", "a test entry")


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_good_file_downloads_once_then_comes_from_the_cache(server, cache, capfd):
    path = hub.fetch(entry(f"{server}/good/team.pt?X-Signature=abc"))  # a presigned URL: the name is its path's
    assert path == cache / "team.pt" and path.read_bytes() == BODY
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "readable as any new file: a shared cache"
    assert "team.pt" in capfd.readouterr().err  # the progress bar
    assert hub.fetch(entry("http://127.0.0.1:9/good/team.pt")) == path  # nothing listens on port 9
    assert Handler.requests == ["/good/team.pt?X-Signature=abc"] and left_in(cache) == ["team.pt"]


@pytest.mark.parametrize(
    "path,says",
    [
        ("drop/team.pt", "the connection closed after 524,288 of 1,048,576 bytes"),
        ("stall/team.pt", "no data for 1 s (DETECTOR_DOWNLOAD_TIMEOUT)"),
        ("status/404/team.pt", "HTTP 404 Not Found"),
        ("status/500/team.pt", "HTTP 500 Internal Server Error"),
    ],
)
def test_a_failed_download_is_one_line_and_leaves_nothing(server, cache, path, says):
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        hub.fetch(entry(f"{server}/{path}"))
    message = str(error.value)
    assert "\n" not in message and says in message and f"{server}/{path}" in message, message
    assert time.monotonic() - start < 2.5, "a stalled server ends within the timeout"
    assert left_in(cache) == [], "no partial or temporary file"


def test_wrong_bytes_are_refused_with_both_hashes_and_removed(server, cache):
    with pytest.raises(UserError) as error:
        hub.fetch(entry(f"{server}/wrong/team.pt"))
    wrong = hashlib.sha256(b"not the weights" * 1000).hexdigest()
    assert wrong in str(error.value) and DIGEST in str(error.value) and left_in(cache) == []


def test_a_mirror_serves_every_file_by_its_name(server, cache, monkeypatch):
    monkeypatch.setenv(hub.MIRROR_VARIABLE, f"{server}/good/")
    path = hub.fetch(entry("https://models.example.com/releases/team.pt"))
    assert path.read_bytes() == BODY and Handler.requests == ["/good/team.pt"]
    monkeypatch.setenv(hub.MIRROR_VARIABLE, "artifacts.example.com/weights")
    with pytest.raises(UserError, match="DETECTOR_WEIGHTS_MIRROR='artifacts.example.com/weights': expected an http"):
        hub.fetch(entry("https://models.example.com/releases/other.pt"))


def write_catalog(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_two_processes_fetching_at_once_both_get_the_verified_file(server, cache, tmp_path):
    text = f"team-model:\n  url: {server}/slow/team.pt\n  sha256: {DIGEST}\n"
    listing = write_catalog(tmp_path / "weights.yaml", text)
    env = {**os.environ, "DETECTOR_WEIGHTS_CATALOG": str(listing)}
    code = "from detector.weights import catalog, hub; print(hub.sha256_of(hub.fetch(catalog.lookup('team-model'))))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == [DIGEST, DIGEST]
    assert Handler.requests == ["/slow/team.pt"] * 2, "both downloaded: they overlapped"
    assert left_in(cache) == ["team.pt"] and (cache / "team.pt").read_bytes() == BODY


def test_user_catalog_entries_are_names_everywhere(tmp_path, monkeypatch):
    good = write_catalog(tmp_path / "a.yaml", f"""
team-model:
  url: https://models.example.com/team.pt
  sha256: {DIGEST.upper()}
  kind: checkpoint
  description: shelf products
backbone-s:
  url: file:///srv/weights/mobilenet_v3_small.pth
  sha256: {DIGEST}
  kind: torchvision-classifier
  backbone: mobilenet_v3_small
""")  # fmt: skip
    text = "zoo-archive:\n  url: https://x.example/a.tar.gz\n  kind: tf-frozen-graph\n"
    other = write_catalog(tmp_path / "b.yaml", text)
    monkeypatch.setenv(catalog.CATALOG_VARIABLE, os.pathsep.join([str(good), str(other)]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    team = catalog.lookup("team-model")
    assert (team.sha256, team.filename, team.kind) == (DIGEST, "team.pt", "checkpoint")
    assert catalog.lookup("zoo-archive").sha256 == ""  # an archive may go unhashed: trust on first use
    assert catalog.lookup("torchvision-coco") is catalog.CATALOG["torchvision-coco"]
    detectors = catalog.detector_names()
    assert {"team-model", "zoo-archive"} <= set(detectors) and "backbone-s" not in detectors
    (tmp_path / "config" / "detector").mkdir(parents=True)
    text = f"mine:\n  url: https://x.example/m.pt\n  sha256: {DIGEST}\n"
    write_catalog(tmp_path / "config" / "detector" / "weights.yaml", text)
    assert catalog.lookup("mine").kind == "checkpoint"  # the per-user file, read when it changes


@pytest.mark.parametrize(
    "text,says",
    [
        ("m:\n  url: https://x/m.pt\n  sha256: {d}\n  colour: red\n", "entry 'm': unknown key 'colour'"),
        ("m:\n  url: https://x/m.pt\n  sha256: abc123\n", "entry 'm': sha256 'abc123': expected 64 hex digits"),
        ("m:\n  url: https://x/m.pt\n  sha256: {d}\n  kind: onnx\n", "entry 'm': kind 'onnx': expected one of"),
        ("torchvision-coco:\n  url: https://x/m.pt\n  sha256: {d}\n", "entry 'torchvision-coco': a built-in name"),
        ("m:\n  sha256: {d}\n", "entry 'm': url '': expected an http(s):// or file:// URL"),
        ("m:\n  url: https://x/m.pt\n", "entry 'm': sha256 '': expected 64 hex digits"),
        ("- a\n- b\n", "a weights catalog maps names to entries"),
    ],
)
def test_a_bad_catalog_entry_is_one_line_naming_the_file_and_the_entry(tmp_path, monkeypatch, text, says):
    bad = write_catalog(tmp_path / "bad.yaml", text.format(d=DIGEST))
    monkeypatch.setenv(catalog.CATALOG_VARIABLE, str(bad))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with pytest.raises(UserError) as error:
        catalog.lookup("m")
    assert str(error.value).startswith(f"{bad}: ") and says in str(error.value) and "\n" not in str(error.value)
