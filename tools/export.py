"""Export a checkpoint to ONNX (raw or with NMS in the graph, fp32 or int8), OpenVINO, ExecuTorch or TorchScript.

    python tools/export.py --weights CKPT [--format onnx|openvino|executorch|torchscript] [--nms] [--out FILE]
    python tools/export.py --weights CKPT --int8 --calib DIR [--val-json ANN.json --val-images DIR]
    python tools/export.py --weights CKPT --format openvino [--int8 --calib DIR] [--val-json ... --val-images ...]

BatchNorm is folded into the convolutions first. After export the file is run (ONNX Runtime, or TorchScript)
on sample inputs and compared with the PyTorch checkpoint: the largest box and score differences are printed,
and a mismatch (boxes > 0.01 px or scores > 1e-4 apart, or another number of detections) fails the export:
exit status 2, no file written. --int8 quantises statically (QDQ, per-channel int8 weights, uint8
activations) with min/max ranges calibrated on images of DIR; with --val-json/--val-images it prints COCO AP
and AP50 of fp32 and int8 on that labelled set, and fails when int8 loses more than --max-ap-loss AP points.
--format openvino writes an OpenVINO IR (FILE.xml + FILE.bin, '.[openvino]'), checked in OpenVINO at f32 as
ONNX is; its --int8 is OpenVINO's own (NNCF) quantisation; --val-json then scores fp32 and int8, or without
--int8 fp32 and bf16 (on CPUs with it). --format executorch writes an ExecuTorch program (FILE.pte, XNNPACK delegate,
'.[executorch]'), fp32 or PT2E int8, checked the same way. The files carry input size, score function,
post-processing settings and categories: tools/detect.py --weights FILE.onnx (.xml, .pte) needs nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector import cli
from detector.deploy.pipeline import default_output_path, export_onnx_file, export_torchscript_file
from detector.deploy.quantize import calibration_files
from detector.weights import catalog
from detector.weights import resolve as weights


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--weights", required=True, help=f"checkpoint (.pt) to export, or a name: {', '.join(catalog.detector_names())}"
    )
    parser.add_argument("--format", choices=("onnx", "openvino", "executorch", "torchscript"), default="onnx")
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
    if args.format == "torchscript" and (args.nms or args.int8):
        parser.error("--nms and --int8 apply to --format onnx and openvino")
    if args.format in ("openvino", "executorch") and (args.nms or args.dynamic_batch and args.format == "executorch"):
        parser.error(f"--nms{' and --dynamic-batch' if args.format == 'executorch' else ''} apply to --format onnx")
    if args.int8 and not args.calib:
        parser.error("--int8 needs --calib DIR (images to calibrate the activation ranges on)")
    if bool(args.val_json) != bool(args.val_images):
        parser.error("--val-json and --val-images go together")
    if args.val_json and not args.int8 and args.format != "openvino":
        parser.error("--val-json/--val-images compare int8 with fp32; add --int8")
    if args.calib_count < 1:
        parser.error("--calib-count must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    out = Path(args.out) if args.out else default_output_path(args.weights, args.format, args.nms, args.int8)
    model, post, categories, cfg = weights.load_detector(args.weights)
    source = Path(args.weights).name
    calib = calibration_files(args.calib, args.calib_count) if args.int8 else None
    accuracy_set = (args.val_json, args.val_images) if args.val_json else None
    if args.format == "torchscript":
        report = export_torchscript_file(model, post, categories, cfg, out, source=source, say=print)
    elif args.format == "executorch":
        from detector.deploy.executorch_runtime import export_pte_file

        report = export_pte_file(model, post, categories, cfg, out, int8_calibration_files=calib, source=source,
                                 accuracy_set=accuracy_set, max_ap_loss=args.max_ap_loss, say=print)  # fmt: skip
    elif args.format == "openvino":
        from detector.deploy.openvino_runtime import export_ir_file

        report = export_ir_file(model, post, categories, cfg, out, dynamic_batch=args.dynamic_batch,
                                int8_calibration_files=calib, accuracy_set=accuracy_set,
                                max_ap_loss=args.max_ap_loss, source=source, say=print)  # fmt: skip
    else:
        report = export_onnx_file(
            model,
            post,
            categories,
            cfg,
            out,
            nms=args.nms,
            dynamic_batch=args.dynamic_batch,
            int8_calibration_files=calib,
            accuracy_set=accuracy_set,
            max_ap_loss=args.max_ap_loss,
            source=source,
            say=print,
        )
    print(report.describe())
    return 0


if __name__ == "__main__":
    cli.run(main)
