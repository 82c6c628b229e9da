"""Checkpoints: written atomically (temp file, fsync, rename), read with ``torch.load(weights_only=True)``;
``atomic_file``, the same rename for any other file a run must never leave half-written.

A checkpoint is a dict of plain data and tensors:
    format: "detector-checkpoint", version: 1,
    model: state dict, config: the resolved Config as nested dicts,
    categories: list of {"id": dataset category id, "name": str}, one per foreground class, in label order
    (label k of the model, 1-based, is categories[k - 1]); training adds optimizer, scheduler, ... entries.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import torch

from detector.errors import UserError

FORMAT, VERSION = "detector-checkpoint", 1


def previous_path(path: str | Path) -> Path:
    """Where ``save(..., keep_previous=True)`` keeps the checkpoint it replaces: last.pt -> last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_file(path) as f: ...`` writes a temporary file beside ``path`` and renames it to ``path`` when
    the block ends, or removes it when the block raises: readers, and other processes writing the same path, see the
    old file or a complete new one, never a partial one. The file gets the permissions of any new file (not
    mkstemp's owner-only ones: caches may be shared). For a checkpoint, which also needs fsync, use ``save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: str | Path, payload: dict, keep_previous: bool = False) -> None:
    """Write ``payload`` to ``path`` so that a crash at any moment leaves a complete file: the new one, or the
    old one (at ``path``, or with ``keep_previous`` at ``previous_path(path)``, which keeps the one before)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            # The old file becomes the previous one through a second name (a hard link, or a copy where
            # links are not supported), so that ``path`` itself is never missing, not even for an instant.
            try:
                os.link(path, tmp + ".prev")
            except OSError:
                shutil.copy2(path, tmp + ".prev")
            os.replace(tmp + ".prev", previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp + ".prev").unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state_file(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` with a one-line error for missing, corrupt or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused: the file holds Python objects beyond tensors and plain data, which could run code "
            f"when loaded ({str(exc).splitlines()[0][:200]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupted?): {str(exc)[:200]}") from None


def load(path: str | Path) -> dict:
    """A checkpoint of ours, checked for its format and required entries. When it is unreadable and an older
    good one is kept beside it (``previous_path``), the error says so."""
    try:
        ckpt = load_state_file(path)
    except UserError as exc:
        prev = previous_path(path)
        if Path(path).is_file() and prev.is_file():
            raise UserError(
                f"{exc}; the previous checkpoint {prev} is kept: resume from it with --resume {prev}"
            ) from None
        raise
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a detector checkpoint (tools/convert.py turns torchvision's and TF's weights into one)"
        )
    for key in ("model", "config", "categories"):
        if key not in ckpt:
            raise UserError(f"{path}: checkpoint has no {key!r} entry")
    return ckpt


def shipped_weights(ckpt: dict) -> dict:
    """The weights a checkpoint's model is used with: those of the EMA when the run kept one (what its
    evaluations scored and best.pt was chosen by), else its ``model`` entry."""
    ema = ckpt.get("ema")
    if not ema:
        return ckpt["model"]
    return {key.removeprefix("module."): value for key, value in ema.items() if key.startswith("module.")}


def rename_by_prefix(state: dict, prefixes: dict[str, str]) -> tuple[dict, list[str]]:
    """``state`` with each key's first matching prefix of ``prefixes`` (old -> new) replaced, and the keys no
    prefix matched (left out of the result), e.g. to load torchvision's state dicts into our modules."""
    renamed, unmatched = {}, []
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            unmatched.append(key)
        else:
            renamed[prefixes[prefix] + key[len(prefix) :]] = value
    return renamed, unmatched
