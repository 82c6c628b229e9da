"""Turn torchvision's ssdlite320_mobilenet_v3_large weights into a checkpoint of ours (torchvision layout).

    python tools/convert_torchvision.py --out ssdlite_tv.pt [--state-dict FILE]

Without --state-dict the COCO weights come through torchvision's weights API (its cache, or a download when
the machine is online). The checkpoint carries torchvision's post-processing (score 0.001, NMS 0.55,
300 per class, 300 per image) and the 91-id COCO category map; torchvision reports 21.3 box mAP on val2017.
"""

from __future__ import annotations

import argparse
import logging

from detector import checkpoint, cli, config
from detector.build import build_model
from detector.errors import UserError
from detector.paper.torchvision_ssdlite import TORCHVISION_CONFIG, coco_categories, convert_state_dict

log = logging.getLogger("convert_torchvision")


def fetch_coco_weights() -> dict:
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    try:
        return SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.get_state_dict(progress=True)
    except OSError as exc:  # URLError and socket errors are OSErrors
        raise UserError(
            f"cannot fetch torchvision's COCO weights ({exc}); the machine looks offline. Download "
            f"{SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.url} elsewhere and pass it with --state-dict"
        ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--state-dict", help="torchvision state-dict file (torch.save(model.state_dict()))")
    args = parser.parse_args()
    cli.setup_logging()
    state = checkpoint.load_state_file(args.state_dict) if args.state_dict else fetch_coco_weights()
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # torchvision reference-script checkpoints wrap the state dict
    model = build_model(TORCHVISION_CONFIG.model, init=False)
    model.load_state_dict(convert_state_dict(state, model))
    checkpoint.save(
        args.out,
        {
            "model": model.state_dict(),
            "config": config.to_dict(TORCHVISION_CONFIG),
            "categories": coco_categories(),
            "source": "torchvision ssdlite320_mobilenet_v3_large",
        },
    )
    log.info("wrote %s (%d tensors, torchvision layout, 3234 anchors)", args.out, len(model.state_dict()))
    return 0


if __name__ == "__main__":
    cli.run(main)
