"""Named weights in torch's hub cache (``$TORCH_HOME/hub/checkpoints/``): found there, or downloaded once.

A cached file is used without the network; every file is checked against the SHA-256 of its catalog entry
before use, so a truncated download or a different file under the expected name is refused. Where the publisher
gives no hash (TF's zoo), the first file that converted is trusted and its SHA-256 kept beside it
(``FILE.sha256``): a later, different file is refused with both hashes. Downloads show a progress bar
and land in the cache atomically: a temporary file in the same folder, renamed when complete and removed on any
error, so neither a broken connection nor two processes fetching at once leave a partial file under the name.

Settings (environment): ``DETECTOR_OFFLINE=1`` forbids downloads; ``DETECTOR_WEIGHTS_MIRROR=URL`` fetches every file
as URL/FILENAME instead of from its publisher (same hash check); ``DETECTOR_DOWNLOAD_TIMEOUT`` is the seconds a
silent connection may last (default 60).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.request
from pathlib import Path

import torch
from tqdm import tqdm

from detector.checkpoint import atomic_file
from detector.errors import UserError
from detector.weights.catalog import NamedWeights

log = logging.getLogger(__name__)

OFFLINE_VARIABLE = "DETECTOR_OFFLINE"
MIRROR_VARIABLE = "DETECTOR_WEIGHTS_MIRROR"
TIMEOUT_VARIABLE = "DETECTOR_DOWNLOAD_TIMEOUT"
DOWNLOAD_TIMEOUT_S = 60.0  # a stalled connection is an error, not a hang


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


def source_url(entry: NamedWeights) -> str:
    """Where ``entry`` is downloaded from: its publisher's URL, or MIRROR/FILENAME with a mirror set."""
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    if mirror and not mirror.startswith(("http://", "https://", "file://")):
        raise UserError(f"{MIRROR_VARIABLE}={mirror!r}: expected an http(s):// or file:// URL")
    return f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url


def download_timeout() -> float:
    value = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    try:
        timeout = float(value) if value else DOWNLOAD_TIMEOUT_S
    except ValueError:
        timeout = -1.0
    if timeout <= 0:
        raise UserError(f"{TIMEOUT_VARIABLE}={value!r}: expected seconds, a positive number")
    return timeout


def _download(entry: NamedWeights, path: Path) -> None:
    folder, url = path.parent, source_url(entry)
    if offline():
        reason = f"{OFFLINE_VARIABLE} is set"
    else:
        size = f", {entry.size / 1e6:.1f} MB" if entry.size else ""
        log.info("downloading %s (%s%s) into %s", entry.name, url, size, folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _stream(url, path, download_timeout())
            return
        except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, a short body
            reason = _reason(exc)
    raise UserError(
        f"{entry.name}: {entry.filename} is not in {folder} and cannot be downloaded from {url} ({reason}): "
        f"download it and put it in {folder}/"
    )


def _stream(url: str, path: Path, timeout: float) -> None:
    """``url`` -> ``path`` with a progress bar, through a temporary file in the same folder that is renamed into
    place only when the whole body (``Content-Length``) arrived, and removed on any error. ``timeout``: seconds
    a connection may stay silent (connecting, or between two reads)."""
    request = urllib.request.Request(url, headers={"User-Agent": "detector (python urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response, atomic_file(path) as out:
        total, done = int(response.headers.get("Content-Length") or 0), 0
        with tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        if total and done != total:
            raise OSError(f"the connection closed after {done:,} of {total:,} bytes")


def _reason(exc: BaseException) -> str:
    """One line for a failed download: the HTTP status, the network error, or what broke the body."""
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection closed after {len(exc.partial):,} bytes of the body"
    if isinstance(exc, TimeoutError):
        return f"no data for {download_timeout():g} s ({TIMEOUT_VARIABLE})"
    reason = getattr(exc, "reason", None)
    if hasattr(exc, "code") and reason is not None:  # urllib's HTTPError
        return f"HTTP {exc.code} {reason}"
    return str(reason or exc).splitlines()[0][:160] or type(exc).__name__


def fetch(entry: NamedWeights) -> Path:
    """The verified local file of ``entry``: from the cache, or downloaded into it first. A file whose SHA-256
    is not the entry's is refused (a fresh download of it is removed, a file already there is left to the user)."""
    path = cached_path(entry)
    downloaded = not path.is_file()
    if downloaded:
        _download(entry, path)
    if not entry.sha256:
        _check_first_use(path)
        return path  # no published hash: the reader checks the contents, then remember_first_use
    actual = sha256_of(path)
    if actual == entry.sha256:
        return path
    if downloaded:
        path.unlink(missing_ok=True)  # a bad download must not sit in the cache as if it were good
        raise UserError(
            f"{entry.name}: the download from {source_url(entry)} has SHA-256 {actual}, not {entry.sha256}; "
            f"it was removed from {path.parent}"
        )
    raise UserError(
        f"{path}: refused: its SHA-256 is {actual}, {entry.name} should have {entry.sha256} "
        f"({entry.size:,} bytes); delete the file to download it again, or put {entry.url} there"
    )


def _pin_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _pinned(path: Path) -> str | None:
    """The SHA-256 kept at the first use of ``path`` (an entry without a published hash), or None."""
    pin = _pin_file(path)
    return pin.read_text().split()[0] if pin.is_file() else None


def _check_first_use(path: Path) -> None:
    """A file of an entry without a published hash: refused when it differs from the first one that converted."""
    trusted = _pinned(path)
    if trusted is None:
        return
    actual = sha256_of(path)
    if actual != trusted:
        pin = _pin_file(path)
        raise UserError(
            f"{path}: refused: its SHA-256 is {actual}, but the copy first used here had {trusted} (kept in "
            f"{pin.name}); if the new file is right, delete {pin.name} to trust it, or pin a hash in a weights catalog"
        )


def remember_first_use(entry: NamedWeights, path: Path) -> None:
    """After ``path`` (of an entry without a published hash) converted: keep its SHA-256 beside it, once."""
    pin = _pin_file(path)
    if entry.sha256 or pin.is_file():
        return
    digest = sha256_of(path)
    with atomic_file(pin, "w") as f:
        f.write(f"{digest}  {path.name}\n")
    log.info("%s: first use, SHA-256 %s kept in %s; later files must match it (pin it in a weights catalog with "
             "sha256: %s)", entry.name, digest, pin, digest)  # fmt: skip


def check_cached(entry: NamedWeights) -> tuple[bool, str]:
    """(ok, what) for the cached file of ``entry``: "missing", "verified", "first-use hash matches", "no hash
    yet (recorded at first use)", or why it is refused."""
    path = cached_path(entry)
    if not path.is_file():
        return True, "missing"
    actual = sha256_of(path)
    if entry.sha256:
        return (True, "verified") if actual == entry.sha256 else (False, f"SHA-256 {actual}, not {entry.sha256}")
    trusted = _pinned(path)
    if trusted is None:
        return True, "no hash published; recorded at first use"
    return (True, "first-use hash matches") if actual == trusted else (False, f"SHA-256 {actual}, first use {trusted}")


def import_file(entry: NamedWeights, source: Path) -> Path:
    """Put ``source`` (downloaded elsewhere) into the cache as ``entry``'s file, after checking its SHA-256 (an
    entry without a published hash: trusted on first use, as a download would be)."""
    if not source.is_file():
        raise UserError(f"{source}: no such file")
    actual = sha256_of(source)
    if entry.sha256 and actual != entry.sha256:
        raise UserError(f"{source}: its SHA-256 is {actual}, {entry.name} has {entry.sha256}; not imported")
    path = cached_path(entry)
    with atomic_file(path) as out, open(source, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)
    if not entry.sha256 and _pinned(path) not in (None, actual):
        _pin_file(path).unlink()  # importing is trusting: the new file's hash is kept at its first use
        log.info("%s: the first-use SHA-256 kept in %s was another file's; removed", entry.name, _pin_file(path))
    return path
