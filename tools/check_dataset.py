"""Check a COCO-format dataset the way training does before it starts, and list every problem.

    python tools/check_dataset.py --json annotations.json --images images/
    python tools/check_dataset.py --data-root COCO --split val

Exit status: 0 when nothing is wrong, 1 when problems were found (training skips what they name), 2 when the
dataset cannot be used at all (malformed annotation file, no usable image).
"""

from __future__ import annotations

import argparse
import sys

from detector import cli
from detector.build import data_files
from detector.config import DataConfig
from detector.data.annotations import read_annotation_json
from detector.data.dataset import read_coco_records
from detector.data.preflight import check_images
from detector.errors import UserError


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="COCO annotation file")
    p.add_argument("--images", help="its image folder")
    p.add_argument("--data-root", help="COCO 2017 layout root")
    p.add_argument("--split", default="train", choices=("train", "val"))
    args = p.parse_args()
    data = DataConfig(data_root=args.data_root or "")
    if args.split == "train":
        data.train_json, data.train_images = args.json or "", args.images or ""
    else:
        data.val_json, data.val_images = args.json or "", args.images or ""
    ann, images = data_files(data, args.split)
    records, categories, report = read_coco_records(read_annotation_json(ann), ann, images)
    usable = check_images(records, report, progress=sys.stderr.isatty())
    for kind, where in report.problems:
        print(f"{kind}: {where}")
    boxes = sum(len(r.boxes) for r in usable)
    print(
        f"summary: {len(records)} images, {len(usable)} usable, {boxes} boxes in {len(categories)} categories; "
        f"{len(report.problems)} problems" + "".join(f"\n  {n} x {k}" for k, n in sorted(report.counts.items()))
    )
    if not usable:
        raise UserError(f"{ann}: no usable image")
    return 1 if report.problems else 0


if __name__ == "__main__":
    cli.run(main)
