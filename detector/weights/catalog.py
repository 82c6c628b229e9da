"""The weights the project knows by name: where each comes from, its SHA-256 and what it becomes.

``kind`` says how a file becomes weights of ours:
    "torchvision-ssdlite": a torchvision ``ssdlite320_mobilenet_v3_large`` state dict, converted into a detector
        checkpoint of ours (torchvision layout, 90 COCO-id class slots, torchvision's post-processing);
    "torchvision-classifier": a torchvision MobileNetV3 ImageNet classifier state dict; only its feature layers
        are used (``train_coco.py --init``), as the backbone of a detector;
    "tf-frozen-graph": a TF Object Detection API zoo archive (``.tar.gz``) of the paper's own models, whose
        ``frozen_inference_graph.pb`` is converted as ``tools/convert.py GRAPH`` converts it;
    "checkpoint": a checkpoint of ours.
File names are the publishers' (torchvision's ``NAME-<first 8 hex digits of the SHA-256>.pth``, the zoo's
archive names), so a file torchvision or a zoo user already downloaded into ``$TORCH_HOME/hub/checkpoints/`` is
found and used as it is. TF publishes no checksums for its zoo: those entries have no SHA-256, and a damaged or
wrong file is caught by gzip's CRC-32 and by the converter, which needs every tensor by name and shape, and
the SHA-256 of the first archive that converted is kept and checked on every later use (``hub.fetch``).

Users add names in YAML files of the same form (``user_entries``): the files listed in ``$DETECTOR_WEIGHTS_CATALOG``
(separated by ``os.pathsep``), then ``$XDG_CONFIG_HOME/detector/weights.yaml`` (``~/.config/...``) when it exists:

    acme-shelf-v2:
      url: https://models.example.com/acme-shelf-v2.pt
      sha256: <64 hex digits>         # optional only for tf-frozen-graph archives (trust on first use)
      kind: checkpoint                # or torchvision-ssdlite, torchvision-classifier, tf-frozen-graph
      description: shelf products, V3-Small†, 2026-11
      backbone: mobilenet_v3_small    # required for torchvision-classifier (train_coco.py --init checks it)
      size: 8103095                   # optional, bytes

Every entry is checked when read: an unknown key, a missing url, a hash that is not 64 hex digits, an unknown
kind, or a name already taken (built in, or by an earlier file) is one line naming the file and the entry.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml

from detector.errors import UserError

CATALOG_VARIABLE = "DETECTOR_WEIGHTS_CATALOG"
KINDS = ("checkpoint", "torchvision-ssdlite", "torchvision-classifier", "tf-frozen-graph")
ENTRY_KEYS = ("url", "sha256", "kind", "description", "backbone", "size")


@dataclass(frozen=True)
class NamedWeights:
    name: str
    url: str
    sha256: str  # of the whole file, lower-case hex; "" where the publisher gives none (TF's zoo)
    size: int  # bytes; 0 where not known
    kind: str  # torchvision-ssdlite | torchvision-classifier | tf-frozen-graph | checkpoint
    backbone: str  # the model.backbone these weights fit
    description: str

    @property
    def filename(self) -> str:
        """The file name in the cache: the last part of the URL's path (no query string)."""
        return urllib.parse.urlparse(self.url).path.rsplit("/", 1)[-1]


CATALOG: dict[str, NamedWeights] = {
    w.name: w
    for w in (
        NamedWeights(
            name="torchvision-coco",
            url="https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
            sha256="a79551df90c79834bcd3bb3845ef9d966b5449a3a9b2833ae8404778ca5d65d2",
            size=14_069_355,
            kind="torchvision-ssdlite",
            backbone="mobilenet_v3_large",
            description="torchvision's SSDLite320 MobileNetV3-Large† on COCO (21.3 box mAP on val2017)",
        ),
        NamedWeights(
            name="imagenet-large",
            url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
            sha256="8738ca797c879b547d18bbd15da5736ff2557b2036a9af72225393ca61759a04",
            size=22_139_423,
            kind="torchvision-classifier",
            backbone="mobilenet_v3_large",
            description="torchvision's MobileNetV3-Large ImageNet classifier (IMAGENET1K_V1, 74.0 % top-1)",
        ),
        NamedWeights(
            name="imagenet-small",
            url="https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
            sha256="047dcff4addef86ea5bc2eff13c9614dc11f47ab1160d0a71a25e7db994f4e1f",
            size=10_306_551,
            kind="torchvision-classifier",
            backbone="mobilenet_v3_small",
            description="torchvision's MobileNetV3-Small ImageNet classifier (IMAGENET1K_V1, 67.7 % top-1)",
        ),
        NamedWeights(
            name="paper-v3-large-coco",
            url="https://download.tensorflow.org/models/object_detection/ssd_mobilenet_v3_large_coco_2020_01_14.tar.gz",
            sha256="",
            size=0,
            kind="tf-frozen-graph",
            backbone="mobilenet_v3_large",
            description="the paper's SSDLite MobileNetV3-Large† (TF zoo 2020_01_14; the zoo lists 22.6 COCO mAP)",
        ),
        NamedWeights(
            name="paper-v3-small-coco",
            url="https://download.tensorflow.org/models/object_detection/ssd_mobilenet_v3_small_coco_2020_01_14.tar.gz",
            sha256="",
            size=0,
            kind="tf-frozen-graph",
            backbone="mobilenet_v3_small",
            description="the paper's SSDLite MobileNetV3-Small† (TF zoo 2020_01_14; the zoo lists 15.4 COCO mAP)",
        ),
    )
}

DEFAULT_DETECTOR = "torchvision-coco"  # what tools/detect.py runs without --weights


def user_catalog_files() -> list[Path]:
    """The user's catalog files: those of ``$DETECTOR_WEIGHTS_CATALOG``, then the per-user one if it exists."""
    files = [Path(p).expanduser() for p in os.environ.get(CATALOG_VARIABLE, "").split(os.pathsep) if p.strip()]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    default = config_home / "detector" / "weights.yaml"
    files += [default] if default.is_file() else []
    unique: dict[Path, Path] = {}
    for path in files:  # the same file named twice (or by two spellings) is read once
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _entry(path: Path, name: object, fields: object) -> NamedWeights:
    where = f"{path}: entry {name!r}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise UserError(f"{where}: a name is letters, digits and . _ + - (no spaces or slashes)")
    if not isinstance(fields, dict):
        raise UserError(f"{where}: expected keys {', '.join(ENTRY_KEYS)}")
    unknown = [k for k in fields if k not in ENTRY_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(ENTRY_KEYS)}")
    url, kind = str(fields.get("url", "")), str(fields.get("kind", "checkpoint"))
    sha256, backbone = str(fields.get("sha256", "")).lower(), str(fields.get("backbone", ""))
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file") or not parsed.path.rsplit("/", 1)[-1]:
        raise UserError(f"{where}: url {url!r}: expected an http(s):// or file:// URL ending in the file name")
    if kind not in KINDS:
        raise UserError(f"{where}: kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) and not (sha256 == "" and kind == "tf-frozen-graph"):
        raise UserError(f"{where}: sha256 {fields.get('sha256', '')!r}: expected 64 hex digits (sha256sum FILE)")
    if kind == "torchvision-classifier" and not backbone:
        raise UserError(f"{where}: a torchvision-classifier needs backbone: (mobilenet_v3_large or _small)")
    size = fields.get("size", 0)
    if not isinstance(size, int) or size < 0:
        raise UserError(f"{where}: size {size!r}: expected a number of bytes")
    description = str(fields.get("description", "")) or f"{kind} from {url}"
    return NamedWeights(name, url, sha256, size, kind, backbone, description)


@functools.cache
def _read(files: tuple[tuple[str, float], ...]) -> dict[str, NamedWeights]:
    entries: dict[str, NamedWeights] = {}
    for file, _ in files:
        path = Path(file)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise UserError(f"{path}: cannot read the weights catalog ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a weights catalog maps names to entries (url, sha256, kind, ...)")
        for name, fields in data.items():
            entry = _entry(path, name, fields)
            if name in CATALOG or name in entries:
                taken = "a built-in name" if name in CATALOG else "named by an earlier catalog file"
                raise UserError(f"{path}: entry {name!r}: {taken}; choose another name")
            entries[name] = entry
    return entries


def user_entries() -> dict[str, NamedWeights]:
    """The entries of the user's catalog files (read again when a file changes)."""
    files = user_catalog_files()
    return _read(tuple((str(p), p.stat().st_mtime if p.is_file() else -1.0) for p in files))


def lookup(name: str) -> NamedWeights | None:
    """The entry called ``name``: built in, or from the user's catalogs; None when there is none. A path with a
    folder in it is never a name (names have no slashes), so the catalog files are not read for it."""
    if name in CATALOG or "/" in name or os.sep in name:
        return CATALOG.get(name)
    return user_entries().get(name)


def names() -> list[str]:
    return [*CATALOG, *user_entries()]


def detector_names() -> list[str]:
    """The names that are detectors (tools' --weights), not backbones."""
    return [name for name, entry in (CATALOG | user_entries()).items() if entry.kind != "torchvision-classifier"]
