"""Turn the paper's released TF models (TF Object Detection API frozen graphs) into checkpoints of ours.

    python tools/convert_tf.py ssd_mobilenet_v3_large_coco_2020_01_14/frozen_inference_graph.pb --out v3_large.pt
    python tools/convert_tf.py ssd_mobilenet_v3_small_coco_2020_01_14.tar.gz --out v3_small.pt   # the archive

No TensorFlow needed: the graph is read with the TF protos that tensorboard ships (pip install '.[tf]').
Every weight of the paper-layout MobileNetV3-Large† / Small† SSDLite is taken from its Const by name; a graph
that is not one of these is refused with the first missing or mis-shaped node. The checkpoint carries TF's
padding (model.padding tf_same), post-processing (sigmoid, score 1e-8, NMS 0.6, 100 per class after NMS, 100
in all) and the 90 COCO-id class slots, so detect.py, eval_coco.py and export.py need nothing else.
"""

from __future__ import annotations

import argparse
import logging

from detector import checkpoint, cli
from detector.weights.tf_graph import graph_checkpoint

log = logging.getLogger("convert_tf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph", help="frozen_inference_graph.pb, or the zoo's .tar.gz holding it")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    args = parser.parse_args()
    cli.setup_logging()
    contents = graph_checkpoint(args.graph, f"TF frozen graph {args.graph}")
    checkpoint.save(args.out, contents)
    log.info("wrote %s (%s†, TF padding and post-processing, 90 COCO-id class slots)", args.out,
             contents["config"]["model"]["backbone"])  # fmt: skip
    return 0


if __name__ == "__main__":
    cli.run(main)
