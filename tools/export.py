"""Export a checkpoint to ONNX (raw or with NMS in the graph, fp32 or int8), OpenVINO, ExecuTorch or TorchScript.

    python tools/export.py --weights CKPT [--format onnx|openvino|executorch|torchscript] [--nms] [--out FILE]
    python tools/export.py --weights CKPT --int8 --calib DIR [--val-json ANN.json --val-images DIR]
    python tools/export.py --weights CKPT --format openvino [--int8 --calib DIR] [--val-json ... --val-images ...]

BatchNorm is folded into the convolutions first. After export the file is run in its own engine (ONNX Runtime,
OpenVINO, ExecuTorch or TorchScript) on sample inputs and compared with the PyTorch checkpoint: the largest box
and score differences are printed, and a mismatch (boxes > 0.01 px or scores > 1e-4 apart, or another number of
detections) fails the export: exit status 2, no file written. --int8 quantises statically (ONNX: QDQ,
per-channel int8 weights, uint8 activations; OpenVINO: NNCF; ExecuTorch: PT2E) with ranges calibrated on images
of DIR, and prints the drift of int8's raw outputs from fp32; with --val-json/--val-images it prints COCO AP and
AP50 of fp32 and int8 on that labelled set (OpenVINO without --int8: fp32 and bf16, on CPUs with it), and fails
when one loses more than --max-ap-loss AP points. --format openvino writes FILE.xml + FILE.bin (int8: '.[openvino]'),
--format executorch FILE.pte (XNNPACK delegate, '.[executorch]', batch 1), --format torchscript a traced
FILE.torchscript.pt (any batch). Every file carries input size, score function, post-processing settings and
categories: tools/detect.py --weights FILE.onnx (.xml, .pte) needs nothing else (detector/deploy/pipeline.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector import cli
from detector.deploy.calibration import calibration_files
from detector.deploy.pipeline import FORMATS, ExportOptions, check_options, default_output_path, export
from detector.errors import UserError
from detector.weights import catalog
from detector.weights.resolve import load_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights", required=True, help=f"checkpoint (.pt) to export, or a name: {', '.join(catalog.detector_names())}"
    )
    parser.add_argument("--format", choices=tuple(FORMATS), default="onnx")
    parser.add_argument("--nms", action="store_true", help="post-processing (per-class NMS) inside the ONNX graph")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    parser.add_argument("--int8", action="store_true", help="post-training int8 quantisation (needs --calib)")
    parser.add_argument("--calib", help="folder of calibration images (a few hundred typical images)")
    parser.add_argument("--calib-count", type=int, default=200, help="calibration images used (default 200)")
    parser.add_argument("--val-json", help="COCO annotations to score fp32 against int8 (and bf16) on")
    parser.add_argument("--val-images", help="folder of the --val-json images")
    parser.add_argument("--max-ap-loss", type=float, default=1.0, help="AP points (0-100) int8 or bf16 may lose "
                        "against fp32 on --val-json before the export fails (default 1.0)")  # fmt: skip
    parser.add_argument("--out", help="file to write (default: next to the checkpoint, e.g. CKPT.int8.onnx)")
    args = parser.parse_args()
    if args.int8 and not args.calib:
        parser.error("--int8 needs --calib DIR (images to calibrate the activation ranges on)")
    if bool(args.val_json) != bool(args.val_images):
        parser.error("--val-json and --val-images go together")
    if args.val_json and not args.int8 and args.format != "openvino":
        parser.error("--val-json/--val-images compare int8 with fp32; add --int8")
    if args.calib_count < 1:
        parser.error("--calib-count must be at least 1")
    try:
        check_options(args.format, args.nms, args.int8, args.dynamic_batch)
    except UserError as exc:
        parser.error(str(exc))
    return args


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    options = ExportOptions(
        format=args.format,
        nms=args.nms,
        dynamic_batch=args.dynamic_batch,
        accuracy_set=(Path(args.val_json), Path(args.val_images)) if args.val_json else None,
        max_ap_loss=args.max_ap_loss,
        source=Path(args.weights).name,
    )
    out = Path(args.out) if args.out else default_output_path(args.weights, args.format, args.nms, args.int8)
    if args.int8:
        options.calibration = calibration_files(args.calib, args.calib_count)
    report = export(load_model(args.weights), out, options, say=print)
    print(report.describe())
    return 0


if __name__ == "__main__":
    cli.run(main)
