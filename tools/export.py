"""Export a checkpoint to ONNX (raw outputs or with NMS in the graph, fp32 or int8) or TorchScript.

    python tools/export.py --weights CKPT [--format onnx|torchscript] [--nms] [--dynamic-batch] [--out FILE]
    python tools/export.py --weights CKPT --int8 --calib DIR [--val-json ANN.json --val-images DIR]

BatchNorm is folded into the convolutions first. After export the file is run (ONNX Runtime, or TorchScript)
on sample inputs and compared with the PyTorch checkpoint: the largest box and score differences are printed,
and a mismatch (boxes > 0.01 px or scores > 1e-4 apart, or another number of detections) fails the export:
exit status 2, no file written. --int8 quantises statically (QDQ, per-channel int8 weights, uint8
activations) with min/max ranges calibrated on images of DIR; with --val-json/--val-images it prints COCO AP
and AP50 of fp32 and int8 on that labelled set. ONNX files carry input size, score function, post-processing
settings and categories in their metadata: tools/detect.py --weights FILE.onnx needs nothing else.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from detector import build, cli
from detector.data.image_io import read_image
from detector.deploy.onnx_export import RawOutputs, append_nms, export_raw, metadata, save
from detector.deploy.onnx_runtime import OnnxDetector, session
from detector.deploy.parity import int8_drift, nms_parity, raw_parity, sample_inputs
from detector.deploy.quantize import ImageCalibration, calibration_files, quantize_raw
from detector.deploy.torchscript import export_torchscript, load_torchscript
from detector.errors import UserError
from detector.evaluation.coco_eval import evaluate, load_coco, to_coco_results

log = logging.getLogger("export")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) to export")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--nms", action="store_true", help="post-processing (per-class NMS) inside the ONNX graph")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    parser.add_argument("--int8", action="store_true", help="post-training int8 quantisation (needs --calib)")
    parser.add_argument("--calib", help="folder of calibration images (a few hundred typical images)")
    parser.add_argument("--calib-count", type=int, default=200, help="calibration images used (default 200)")
    parser.add_argument("--val-json", help="COCO annotations to score fp32 against int8 on")
    parser.add_argument("--val-images", help="folder of the --val-json images")
    parser.add_argument("--out", help="file to write (default: next to the checkpoint, e.g. CKPT.int8.onnx)")
    args = parser.parse_args()
    if args.format == "torchscript" and (args.nms or args.int8):
        parser.error("--nms and --int8 apply to --format onnx")
    if args.int8 and not args.calib:
        parser.error("--int8 needs --calib DIR (images to calibrate the activation ranges on)")
    if bool(args.val_json) != bool(args.val_images):
        parser.error("--val-json and --val-images go together")
    if args.val_json and not args.int8:
        parser.error("--val-json/--val-images compare int8 with fp32; add --int8")
    if args.calib_count < 1:
        parser.error("--calib-count must be at least 1")
    return args


def default_out(args: argparse.Namespace) -> Path:
    weights = Path(args.weights)
    if args.format == "torchscript":
        return weights.with_suffix(".torchscript.pt")
    return weights.with_suffix((".nms" if args.nms else "") + (".int8" if args.int8 else "") + ".onnx")


def batches(inputs: list[np.ndarray], dynamic: bool) -> list[np.ndarray]:
    """The sample images as the graph takes them: one batch of all (and a single one) if dynamic, else one by one."""
    return [np.concatenate(inputs), inputs[0]] if dynamic else inputs


def check(name: str, parity, out: Path) -> None:
    print(f"{name}: {parity.describe()}")
    if not parity.ok:
        raise UserError(f"{out}: the exported model does not match PyTorch ({parity.describe()}); nothing written")


def coco_accuracy(detector: OnnxDetector, ann_path: str, image_dir: str) -> dict[str, float]:
    """AP and AP50 of ``detector`` on a COCO-format labelled set (every detection kept)."""
    coco = load_coco(ann_path)
    records: list[dict] = []
    for info in tqdm(coco.loadImgs(sorted(coco.getImgIds())), desc=f"{detector.precision} eval", unit="img"):
        det = detector([read_image(Path(image_dir) / info["file_name"])])[0]
        records += to_coco_results(info["id"], det["boxes"], det["scores"], det["category_ids"])
    stats = evaluate(coco, records, per_class=False)
    return {"AP": stats["AP"], "AP50": stats["AP50"], "images": len(coco.getImgIds())}


def with_outputs(raw_path: Path, post, args: argparse.Namespace) -> onnx.ModelProto:
    """The raw graph at ``raw_path``, followed by the NMS graph with --nms."""
    graph = onnx.load(str(raw_path))
    return append_nms(graph, post, args.dynamic_batch) if args.nms else graph


def quantize_int8(
    raw_path: Path,
    out: Path,
    fp32_raw,
    files: list[Path],
    size: tuple[int, int],
    props: dict,
    post,
    args: argparse.Namespace,
) -> None:
    """Quantise the raw graph, report how far its outputs move, add NMS with --nms and write ``out``."""
    int8_raw_path = raw_path.with_name("raw.int8.onnx")
    quantize_raw(raw_path, int8_raw_path, ImageCalibration(files, size))
    int8_raw = session(int8_raw_path)
    check_images = [d["images"] for d in iter(ImageCalibration(files[:8], size, desc="int8 check").get_next, None)]
    drift = int8_drift(
        lambda x: fp32_raw.run(None, {"images": x}), lambda x: int8_raw.run(None, {"images": x}), check_images
    )
    print(
        f"int8 vs fp32 raw outputs on {len(check_images)} calibration images: boxes max {drift['box_max']:.3f} px "
        f"(mean {drift['box_mean']:.4f}), scores max {drift['score_max']:.4f} (mean {drift['score_mean']:.5f})"
    )
    save(with_outputs(int8_raw_path, post, args), out, props)
    if args.nms:  # int8 scores tie often; NMS may then keep another of the equal-scored boxes: report only
        int8 = session(out)
        parity = nms_parity(
            lambda x: int8.run(None, {"images": x}), lambda x: int8_raw.run(None, {"images": x}), post, check_images[:2]
        )
        print(f"int8 NMS graph vs PyTorch post-processing of the int8 raw outputs: {parity.describe()}")


def export_ts(model, post, props: dict, samples: list[np.ndarray], out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "model.pt"
        export_torchscript(model, post, tmp_out, props)
        module, _ = load_torchscript(tmp_out)
        reference = RawOutputs(model, post).eval()

        def run(x: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [t.numpy() for t in module(torch.from_numpy(x))]

        check("TorchScript vs PyTorch", raw_parity(run, lambda x: reference(torch.from_numpy(x)), samples), out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp_out, out)


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    out = Path(args.out) if args.out else default_out(args)
    model, post, categories, cfg = build.load_detector(args.weights)
    size = cfg.model.image_size
    samples = sample_inputs(size, 2)
    outputs, precision = ("nms" if args.nms else "raw"), ("int8" if args.int8 else "fp32")
    props = metadata(cfg, post, categories, outputs, precision, Path(args.weights).name)
    if args.format == "torchscript":
        export_ts(model, post, props, batches(samples, True), out)
        print(f"wrote {out} (TorchScript, raw outputs)")
        return 0
    calib_files = calibration_files(args.calib, args.calib_count) if args.int8 else []
    reference = RawOutputs(model, post).eval()  # the checkpoint as it is, BatchNorm unfolded

    def torch_raw(x: np.ndarray):
        with torch.inference_mode():
            return reference(torch.from_numpy(x))

    inputs = batches(samples, args.dynamic_batch)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path, fp32_path = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx"
        export_raw(model, post, raw_path, args.dynamic_batch)
        fp32_raw = session(raw_path)
        check(
            "ONNX Runtime vs PyTorch (raw outputs)",
            raw_parity(lambda x: fp32_raw.run(None, {"images": x}), torch_raw, inputs),
            out,
        )
        save(with_outputs(raw_path, post, args), fp32_path, {**props, "detector.precision": "fp32"})
        if args.nms:  # the NMS graph is checked on fp32, where scores rarely tie
            fp32 = session(fp32_path)
            check(
                "ONNX NMS graph vs PyTorch post-processing",
                nms_parity(lambda x: fp32.run(None, {"images": x}), torch_raw, post, inputs),
                out,
            )
        final = fp32_path
        if args.int8:
            final = Path(tmp) / "int8.onnx"
            quantize_int8(raw_path, final, fp32_raw, calib_files, size, props, post, args)
            if args.val_json:
                rows = {
                    name: coco_accuracy(OnnxDetector(path), args.val_json, args.val_images)
                    for name, path in (("fp32", fp32_path), ("int8", final))
                }
                print(f"accuracy on {args.val_json} ({rows['fp32']['images']} images):")
                print(f"  {'precision':10s} {'AP':>7s} {'AP50':>7s}")
                for name, row in rows.items():
                    print(f"  {name:10s} {row['AP']:7.4f} {row['AP50']:7.4f}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(final, out)
    print(
        f"wrote {out} ({outputs} outputs, {precision}, batch {'dynamic' if args.dynamic_batch else 1}, "
        f"{out.stat().st_size / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
