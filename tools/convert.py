"""Turn weights published elsewhere into a checkpoint of ours, which every tool then takes as --weights.

    python tools/convert.py --state-dict FILE --out CKPT       # torchvision's ssdlite320_mobilenet_v3_large
    python tools/convert.py GRAPH --out CKPT                   # the paper's TF frozen graph, .pb or the zoo's .tar.gz
    python tools/convert.py NAME --out CKPT                    # a name of the weights catalog, e.g. torchvision-coco

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
"""

from __future__ import annotations

import argparse
import logging

from detector import checkpoint, cli
from detector.weights import catalog
from detector.weights.resolve import resolve_checkpoint, torchvision_checkpoint
from detector.weights.tf_graph import graph_checkpoint

log = logging.getLogger("convert")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="a TF frozen graph (.pb, .tar.gz) or a name: "
                        + ", ".join(catalog.detector_names()))  # fmt: skip
    parser.add_argument("--state-dict", metavar="FILE", help="a torchvision ssdlite320_mobilenet_v3_large state dict")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    args = parser.parse_args()
    if bool(args.source) == bool(args.state_dict):
        parser.error("give exactly one of SOURCE (a TF graph or a name) and --state-dict FILE")
    cli.setup_logging()
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
