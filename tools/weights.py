"""Named weights: list them, fetch them ahead of time, verify the cache, import a file downloaded elsewhere.

    python tools/weights.py list                          # every name: kind, cached or missing, size, source
    python tools/weights.py fetch NAME [NAME ...]         # download into the cache now (SHA-256 checked)
    python tools/weights.py verify                        # every cached file against its hash
    python tools/weights.py import FILE --name NAME       # a copy carried in by hand, checked, put in the cache

The names are the built-in catalog's and those of your catalog files (DETECTOR_WEIGHTS_CATALOG, a list of YAML
files separated by the path separator, and ~/.config/detector/weights.yaml). Files live in torch's hub cache,
$TORCH_HOME/hub/checkpoints/, under their publishers' names. DETECTOR_WEIGHTS_MIRROR=URL fetches every file as
URL/FILENAME instead (an internal mirror; the same hash check); DETECTOR_OFFLINE=1 forbids downloads;
DETECTOR_DOWNLOAD_TIMEOUT sets how many seconds a silent connection may last (default 60). Archives whose
publisher gives no hash (TF's zoo) are trusted on first use: the SHA-256 of the first one that converted is kept
beside it and checked on every later use. verify exits 1 when a cached file fails its check.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector import cli
from detector.errors import UserError
from detector.weights import catalog, hub


def entry_of(name: str) -> catalog.NamedWeights:
    entry = catalog.lookup(name)
    if entry is None:
        raise UserError(f"{name}: not a name of known weights ({', '.join(catalog.names())})")
    return entry


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every name, cached or missing")
    fetch = commands.add_parser("fetch", help="download names into the cache now")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    commands.add_parser("verify", help="check every cached file against its hash")
    imported = commands.add_parser("import", help="put a file downloaded elsewhere into the cache")
    imported.add_argument("file", type=Path)
    imported.add_argument("--name", required=True, help="the name it is the file of")
    args = p.parse_args()
    cli.setup_logging()
    entries = [entry_of(name) for name in catalog.names()]
    if args.command == "list":
        print(f"cache: {hub.checkpoints_dir()}")
        for e in entries:
            path = hub.cached_path(e)
            state = f"cached {path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "missing"
            size = f", {e.size / 1e6:.1f} MB" if e.size else ""
            print(f"{e.name:24s} {e.kind:22s} {state:16s} {hub.source_url(e)}{size}")
        return 0
    if args.command == "fetch":
        for name in args.names:
            print(f"{name}: {hub.fetch(entry_of(name))}")
        return 0
    if args.command == "import":
        entry = entry_of(args.name)
        print(f"{entry.name}: {args.file} -> {hub.import_file(entry, args.file)}")
        return 0
    bad = 0
    for e in entries:
        ok, what = hub.check_cached(e)
        bad += not ok
        print(f"{e.name:24s} {'ok' if ok else 'REFUSED'}: {what}")
    return 1 if bad else 0


if __name__ == "__main__":
    cli.run(main)
