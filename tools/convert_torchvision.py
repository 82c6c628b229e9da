"""Turn torchvision's ssdlite320_mobilenet_v3_large weights into a checkpoint of ours (torchvision layout).

    python tools/convert_torchvision.py --out ssdlite_tv.pt [--state-dict FILE]

Without --state-dict the COCO weights are the catalog's ``torchvision-coco`` (torch's hub cache, downloaded
once and checked against their SHA-256); every tool also takes ``--weights torchvision-coco`` directly, so
this is for a checkpoint file to keep, or for a state dict of your own (e.g. torchvision's reference scripts).
The checkpoint carries torchvision's post-processing (score 0.001, NMS 0.55, 300 per class, 300 per image) and
the 91-id COCO category map; torchvision reports 21.3 box mAP on val2017.
"""

from __future__ import annotations

import argparse
import logging

from detector import checkpoint, cli
from detector.errors import UserError
from detector.weights.resolve import resolve_checkpoint, torchvision_checkpoint

log = logging.getLogger("convert_torchvision")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--state-dict", help="torchvision state-dict file (torch.save(model.state_dict()))")
    args = parser.parse_args()
    cli.setup_logging()
    if args.state_dict:
        state = checkpoint.load_state_file(args.state_dict)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # torchvision reference-script checkpoints wrap the state dict
        ckpt = torchvision_checkpoint(state, f"torchvision ssdlite320_mobilenet_v3_large ({args.state_dict})")
    else:
        try:
            ckpt = resolve_checkpoint("torchvision-coco")
        except UserError as exc:
            raise UserError(f"{exc}; or pass a state-dict file with --state-dict") from None
    checkpoint.save(args.out, ckpt)
    log.info("wrote %s (%d tensors, torchvision layout, 3234 anchors)", args.out, len(ckpt["model"]))
    return 0


if __name__ == "__main__":
    cli.run(main)
