"""Named weights in torch's hub cache (``$TORCH_HOME/hub/checkpoints/``): found there, or downloaded once.

A cached file is used without the network; every file is checked against the SHA-256 of its catalog entry
before use (where the publisher gives one: TF's zoo does not, see catalog.py), so a truncated download or a
different file under the expected name is refused. Downloads show a progress bar (torch.hub's) and land in
the cache atomically. ``DETECTOR_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
from pathlib import Path

import torch

from detector.errors import UserError
from detector.weights.catalog import NamedWeights

log = logging.getLogger(__name__)

OFFLINE_VARIABLE = "DETECTOR_OFFLINE"
DOWNLOAD_TIMEOUT_S = 60  # a stalled connection is an error, not a hang


def checkpoints_dir() -> Path:
    """torch's hub cache for weight files: $TORCH_HOME/hub/checkpoints (torch.hub.get_dir() + checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(entry: NamedWeights) -> Path:
    return checkpoints_dir() / entry.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _download(entry: NamedWeights, path: Path) -> None:
    folder = path.parent
    if offline():
        reason = f"{OFFLINE_VARIABLE} is set"
    else:
        size = f", {entry.size / 1e6:.1f} MB" if entry.size else ""
        log.info("downloading %s (%s%s) into %s", entry.name, entry.url, size, folder)
        folder.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:  # writes a temporary file in the folder and renames it when complete
            torch.hub.download_url_to_file(entry.url, str(path), hash_prefix=None, progress=True)
            return
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, refused connections
            reason = str(getattr(exc, "reason", None) or exc).splitlines()[0][:160] or type(exc).__name__
        finally:
            socket.setdefaulttimeout(previous)
    raise UserError(
        f"{entry.name}: {entry.filename} is not in {folder} and cannot be downloaded ({reason}): "
        f"download {entry.url} and put it in {folder}/"
    )


def fetch(entry: NamedWeights) -> Path:
    """The verified local file of ``entry``: from the cache, or downloaded into it first. A file whose SHA-256
    is not the entry's is refused (a fresh download of it is removed, a file already there is left to the user)."""
    path = cached_path(entry)
    downloaded = not path.is_file()
    if downloaded:
        _download(entry, path)
    if not entry.sha256:
        return path  # no published hash: the reader checks the contents (catalog.py)
    actual = sha256_of(path)
    if actual == entry.sha256:
        return path
    if downloaded:
        path.unlink(missing_ok=True)  # a bad download must not sit in the cache as if it were good
        raise UserError(
            f"{entry.name}: the download from {entry.url} has SHA-256 {actual}, not {entry.sha256}; "
            f"it was removed from {path.parent}"
        )
    raise UserError(
        f"{path}: refused: its SHA-256 is {actual}, {entry.name} should have {entry.sha256} "
        f"({entry.size:,} bytes); delete the file to download it again, or put {entry.url} there"
    )
