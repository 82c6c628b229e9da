"""TF's COCO 2014 minival, the split the paper's Table 6 and the TF zoo's mAP figures were measured on, found in a
COCO 2017 layout.

The TF Object Detection API trained its COCO models on COCO 2014 train + val minus 8,059 val images, its
"minival", and reports mAP on that minival. The ids ship with this package (``mscoco_minival_ids.txt``, from
``research/object_detection/data/mscoco_minival_ids.txt`` of github.com/tensorflow/models, commit 245f66dd).
COCO 2017 holds the same images under the same ids: train2017 + val2017 = train2014 + val2014, and val2017 is
a subset of val2014. So the minival images are spread over ``train2017/`` and ``val2017/``, and every val2017
image outside minival was in the TF models' training data (``val2017_overlap``).

``minival_dataset_files`` merges the minival records of ``annotations/instances_train2017.json`` and
``instances_val2017.json`` into one annotation file whose ``file_name`` entries carry their folder
(``train2017/...``, ``val2017/...``), with the data root as the image folder. Reading the 2017 train
annotations takes a while (about 450 MB of JSON), so the merged file is kept and reused while the two source
files are unchanged (their sizes and modification times are recorded in it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from detector.checkpoint import atomic_file
from detector.data.annotations import read_annotation_json
from detector.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("val2017", "minival2014")
IDS_SOURCE = "tensorflow/models research/object_detection/data/mscoco_minival_ids.txt (commit 245f66dd)"
MERGED_NAME = "instances_minival2014.json"
FOLDERS = ("train2017", "val2017")


def minival_ids() -> list[int]:
    """The 8,059 image ids of TF's COCO 2014 minival, in the file's order."""
    text = (files("detector.data") / "mscoco_minival_ids.txt").read_text(encoding="ascii")
    return [int(line) for line in text.split()]


@dataclass
class MinivalFiles:
    """``ann_file`` (the merged annotations of the minival images present), ``image_dir`` (the data root),
    ``found`` (images present per folder) and ``missing`` (minival ids absent from the annotations or the
    folders, in the list's order)."""

    ann_file: Path
    image_dir: Path
    found: dict[str, int]
    missing: list[int]

    def describe(self) -> str:
        present = sum(self.found.values())
        where = ", ".join(f"{n:,} in {folder}/" for folder, n in self.found.items())
        return f"minival2014: {present:,} of the {present + len(self.missing):,} images ({where})"


def _stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _merged(data_root: Path, cache_dir: Path, allow_partial: bool) -> dict:
    """The minival records of both 2017 annotation files: {"images", "annotations", "categories", "info"};
    images carry ``file_name`` as ``FOLDER/NAME``. Read from ``cache_dir`` when its sources are unchanged."""
    sources = [data_root / "annotations" / f"instances_{folder}2017.json" for folder in ("train", "val")]
    present = [p for p in sources if p.is_file()]
    if not present or (len(present) < 2 and not allow_partial):
        absent = ", ".join(str(p) for p in sources if not p.is_file())
        raise UserError(f"--split minival2014 reads both COCO 2017 annotation files; not found: {absent}")
    stamps = [_stamp(p) for p in present]
    cached = cache_dir / MERGED_NAME
    if cached.is_file():
        try:
            data = json.loads(cached.read_text())
            if data.get("info", {}).get("sources") == stamps:
                return data
        except (OSError, json.JSONDecodeError):
            pass  # rebuilt below
    wanted = set(minival_ids())
    merged: dict = {"images": [], "annotations": [], "categories": None,
                    "info": {"description": f"TF's COCO 2014 minival ({IDS_SOURCE})", "sources": stamps}}  # fmt: skip
    for path in present:
        folder = path.stem.removeprefix("instances_")
        log.info("reading %s for the minival records", path)
        data = read_annotation_json(path)
        mine = [im for im in data["images"] if isinstance(im, dict) and im.get("id") in wanted]
        ids = {im["id"] for im in mine}
        merged["images"] += [{**im, "file_name": f"{folder}/{im.get('file_name')}"} for im in mine]
        merged["annotations"] += [a for a in data["annotations"] if isinstance(a, dict) and a.get("image_id") in ids]
        if merged["categories"] is None:
            merged["categories"] = data["categories"]
        elif merged["categories"] != data["categories"]:
            raise UserError(f"{path}: its categories differ from those of {present[0]}: not one COCO release")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(cached, "w") as f:
        json.dump(merged, f)
    return merged


def minival_dataset_files(data_root: str | Path, cache_dir: str | Path, allow_partial: bool = False) -> MinivalFiles:
    """The annotation file and image folder of TF's minival found under ``data_root`` (COCO 2017 layout).

    Missing images (ids in neither annotation file, or files absent from ``train2017/`` and ``val2017/``) are a
    UserError giving their count and the first ids, unless ``allow_partial``: then the annotation file holds the
    images present only (written beside the merged one, ``*_partial.json``).
    """
    root, cache = Path(data_root), Path(cache_dir)
    merged = _merged(root, cache, allow_partial)
    by_id = {im["id"]: im for im in merged["images"]}
    present = {i for i, im in by_id.items() if (root / im["file_name"]).is_file()}
    missing = [i for i in minival_ids() if i not in present]
    found = {folder: sum(by_id[i]["file_name"].startswith(folder + "/") for i in present) for folder in FOLDERS}
    result = MinivalFiles(cache / MERGED_NAME, root, found, missing)
    if not missing:
        return result
    first = ", ".join(str(i) for i in missing[:5])
    if not allow_partial:
        raise UserError(
            f"{root}: {len(missing):,} of the 8,059 minival images are missing (first ids: {first}); they belong in "
            f"{root}/train2017/ or {root}/val2017/ with their records in {root}/annotations/instances_*2017.json. "
            f"--allow-partial evaluates the {len(present):,} present (not comparable with published figures)"
        )
    if not present:
        raise UserError(f"{root}: none of the 8,059 minival images is there (first missing ids: {first})")
    partial = {**merged, "images": [im for im in merged["images"] if im["id"] in present],
               "annotations": [a for a in merged["annotations"] if a["image_id"] in present]}  # fmt: skip
    result.ann_file = cache / MERGED_NAME.replace(".json", "_partial.json")
    with atomic_file(result.ann_file, "w") as f:
        json.dump(partial, f)
    return result


def val2017_overlap(data_root: str | Path) -> dict[str, int]:
    """How val2017 (``annotations/instances_val2017.json`` under ``data_root``) splits between TF's minival and
    TF's training data (COCO 2014 train + val minus minival): {"val2017", "in_minival", "in_tf_training"}."""
    path = Path(data_root) / "annotations" / "instances_val2017.json"
    if not path.is_file():
        raise UserError(f"{path}: not found (--report-overlap reads the val2017 annotation file)")
    ids = {im.get("id") for im in read_annotation_json(path)["images"] if isinstance(im, dict)}
    inside = len(ids & set(minival_ids()))
    return {"val2017": len(ids), "in_minival": inside, "in_tf_training": len(ids) - inside}
