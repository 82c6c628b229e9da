"""Benchmarks, measured side by side in one run and printed as ratios (the code lives in benchmarks/).

    python tools/benchmark.py inference [--weights CKPT] [--quick] [--json] [--val-data ROOT] [--memory]
    python tools/benchmark.py train [--batch 8] [--device cuda] [--json]
    python tools/benchmark.py startup [--runs 5] [--real]
    python tools/benchmark.py finetune [--init runs/demo/train/best.pt] [--epochs 12] [--train 600]
    python tools/benchmark.py video [--weights CKPT] [--frames 300] [--rounds 3]
    python tools/benchmark.py gpu [--config RECIPE] [--set KEY=VALUE ...] [--data-root ROOT] [--json]

inference: every inference path (torchvision's, ours in PyTorch eager and in each installed runtime, fp32,
int8, bf16) on 640x480 frames, stage by stage, with the speed targets (benchmarks/inference.py).
train: the data pipeline and the training step, ours against torchvision's (benchmarks/training.py).
startup: a fresh `tools/detect.py IMAGE` until its detections are written (benchmarks/startup.py).
finetune: fine-tuning from the demo's checkpoint against training from scratch (benchmarks/finetune.py).
video: detect.py's loop on a 640x480 video, stages overlapped against one after another (benchmarks/video.py).
gpu: what a recipe takes on this machine: memory per image, the auto micro-batch, loader and step images/s, the
full recipe's projected wall time (benchmarks/gpu_check.py; made for a GPU, runs on the CPU too).
Without a subcommand, inference. Every report names the CPU, its cores, the date and the package versions.
Table 6's latency column is `python tools/table6.py --latency [--runtime NAME]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside tools/, not in the package
from benchmarks import finetune, gpu_check, inference, startup, training, video  # noqa: E402
from detector import cli  # noqa: E402

COMMANDS = {"inference": inference, "train": training, "startup": startup, "finetune": finetune, "video": video,
            "gpu": gpu_check}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, module in COMMANDS.items():
        summary = module.__doc__.split("\n\n")[0]
        module.add_arguments(commands.add_parser(name, help=summary, description=module.__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))  # fmt: skip
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["inference", *argv]  # the benchmark this tool ran before it had subcommands
    args = parser.parse_args(argv)
    cli.setup_logging()
    return COMMANDS[args.command].main(args)


if __name__ == "__main__":
    cli.run(main)
