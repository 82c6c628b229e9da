"""Named weights and published weights: convert them into checkpoints of ours, and manage the weights cache.

    python tools/convert.py --state-dict FILE --out CKPT       # torchvision's ssdlite320_mobilenet_v3_large
    python tools/convert.py GRAPH --out CKPT                   # the paper's TF frozen graph, .pb or the zoo's .tar.gz
    python tools/convert.py NAME --out CKPT                    # a name of the weights catalog, e.g. torchvision-coco
    python tools/convert.py --list                             # every name: kind, cached or missing, size, source
    python tools/convert.py --fetch NAME [NAME ...]            # download into the cache now (SHA-256 checked)
    python tools/convert.py --verify                           # every cached file against its hash (exit 1 if not)
    python tools/convert.py --import FILE --name NAME          # a copy carried in by hand, checked, put in the cache

--state-dict: a torchvision state dict (torch.save(model.state_dict())), or a checkpoint of torchvision's
reference scripts (its "model" entry); it becomes the torchvision layout (6 anchors per level, 3234 at 320),
torchvision's post-processing (score 0.001, NMS 0.55, 300 per class, 300 per image) and the 91-id COCO map.
GRAPH: frozen_inference_graph.pb of the TF Object Detection API zoo's SSDLite MobileNetV3-Large† / Small†, or
the zoo's archive holding it. No TensorFlow needed: the graph is read with the TF protos that tensorboard
ships (pip install '.[tf]'); every weight is taken by its TF name, and a graph that is not one of these is
refused with the first missing or mis-shaped node. The checkpoint carries TF's padding (model.padding
tf_same), resize (data.resize tf_legacy), post-processing as the archive's pipeline.config sets it (a bare .pb:
the paper's, sigmoid, score 1e-8, NMS 0.6, 100 per class after NMS, 100 in all, clipped after NMS) and the 90
COCO-id class slots. NAME: the catalog's detectors (fetched once into torch's hub cache, SHA-256 checked).

The names are the built-in catalog's and those of your catalog files (DETECTOR_WEIGHTS_CATALOG, YAML files
separated by the path separator, and ~/.config/detector/weights.yaml). Files live in torch's hub cache,
$TORCH_HOME/hub/checkpoints/, under their publishers' names. DETECTOR_WEIGHTS_MIRROR=URL fetches every file as
URL/FILENAME (an internal mirror, the same hash check); DETECTOR_OFFLINE=1 forbids downloads;
DETECTOR_DOWNLOAD_TIMEOUT is how many seconds a silent connection may last (default 60). Archives without a
published hash (TF's zoo) are trusted on first use: the SHA-256 of the first one that converted is kept beside it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from detector import checkpoint, cli
from detector.errors import UserError
from detector.weights import catalog, hub
from detector.weights.resolve import resolve_checkpoint, torchvision_checkpoint
from detector.weights.tf_graph import graph_checkpoint

log = logging.getLogger("convert")


def entry_of(name: str) -> catalog.NamedWeights:
    entry = catalog.lookup(name)
    if entry is None:
        raise UserError(f"{name}: not a name of known weights ({', '.join(catalog.names())})")
    return entry


def manage_cache(args: argparse.Namespace) -> int:
    """--list, --fetch, --verify or --import."""
    if args.fetch:
        for name in args.fetch:
            print(f"{name}: {hub.fetch(entry_of(name))}")
        return 0
    if args.import_file:
        entry = entry_of(args.name)
        print(f"{entry.name}: {args.import_file} -> {hub.import_file(entry, args.import_file)}")
        return 0
    entries = [entry_of(name) for name in catalog.names()]
    if args.list:
        print(f"cache: {hub.checkpoints_dir()}")
        for e in entries:
            path = hub.cached_path(e)
            state = f"cached {path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "missing"
            size = f", {e.size / 1e6:.1f} MB" if e.size else ""
            print(f"{e.name:24s} {e.kind:22s} {state:16s} {hub.source_url(e)}{size}")
        return 0
    checks = [(e.name, *hub.check_cached(e)) for e in entries]
    for name, ok, what in checks:
        print(f"{name:24s} {'ok' if ok else 'REFUSED'}: {what}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="a TF frozen graph (.pb, .tar.gz) or a name: "
                        + ", ".join(catalog.detector_names()))  # fmt: skip
    parser.add_argument("--state-dict", metavar="FILE", help="a torchvision ssdlite320_mobilenet_v3_large state dict")
    parser.add_argument("--out", help="checkpoint to write (converting)")
    parser.add_argument("--list", action="store_true", help="every name, cached or missing")
    parser.add_argument("--fetch", nargs="+", metavar="NAME", help="download names into the cache now")
    parser.add_argument("--verify", action="store_true", help="check every cached file against its hash")
    parser.add_argument("--import", dest="import_file", type=Path, metavar="FILE",
                        help="put FILE, downloaded elsewhere, into the cache as --name NAME's file")  # fmt: skip
    parser.add_argument("--name", help="with --import: the name FILE is the file of")
    args = parser.parse_args()
    cache_actions = [args.list, bool(args.fetch), args.verify, bool(args.import_file)]
    if sum(cache_actions) > 1 or any(cache_actions) and (args.source or args.state_dict or args.out):
        parser.error("give one action: SOURCE or --state-dict with --out, --list, --fetch, --verify or --import")
    if bool(args.import_file) != bool(args.name):
        parser.error("--import FILE and --name NAME go together")
    cli.setup_logging()
    if any(cache_actions):
        return manage_cache(args)
    if bool(args.source) == bool(args.state_dict):
        parser.error("give exactly one of SOURCE (a TF graph or a name) and --state-dict FILE")
    if not args.out:
        parser.error("converting needs --out CKPT, the checkpoint to write")
    if args.state_dict:
        state = checkpoint.load_state_file(args.state_dict)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # torchvision reference-script checkpoints wrap the state dict
        contents = torchvision_checkpoint(state, f"torchvision ssdlite320_mobilenet_v3_large ({args.state_dict})")
    elif catalog.lookup(args.source) is not None:
        contents = resolve_checkpoint(args.source)
    else:
        contents = graph_checkpoint(args.source, f"TF frozen graph {args.source}")
    checkpoint.save(args.out, contents)
    model = contents["config"]["model"]
    log.info("wrote %s (%d tensors, %s, %s layout, %d classes)", args.out, len(contents["model"]), model["backbone"],
             model["layout"], model["num_classes"])  # fmt: skip
    return 0


if __name__ == "__main__":
    cli.run(main)
