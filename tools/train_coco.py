"""Train an SSDLite detector on COCO 2017 or any COCO-format dataset, evaluating with the COCO metrics.

    python tools/train_coco.py                                # the paper's V3† recipe on data/coco
    python tools/train_coco.py --config configs/table6_v3_large_reduced_paper.yaml --data-root COCO \
        --output-dir runs/v3 [--set train.epochs=10 ...]
    python tools/train_coco.py --config configs/finetune_coco_custom.yaml --data-root MYDATA --init torchvision-coco
    torchrun --nproc_per_node=8 tools/train_coco.py ...       # batch size and lr are global
    python tools/train_coco.py --resume runs/v3/last.pt       # continues where training stopped

--init (train.init) starts from other weights: a name (imagenet-large, imagenet-small: the backbone;
torchvision-coco: a COCO detector) or a checkpoint of ours; tensors load by name and shape, class rows by
category name, and one summary says what was loaded.

Writes DIR/last.pt and DIR/best.pt (by AP), one JSON line per epoch in DIR/log.jsonl and, when tensorboard
is installed, its scalars under DIR/tb.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from detector import build, checkpoint, cli, config
from detector.errors import UserError
from detector.training import distributed
from detector.training.faults import FaultInjector
from detector.training.loop import StopRequest, TrainingInterrupted, fit
from detector.training.payload import find_resume, restore_training
from detector.training.run_log import RunLog
from detector.training.setup import build_training
from detector.training.state import RunState, seed_everything
from detector.weights.resolve import initialise

log = logging.getLogger("train_coco")
DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "table6_v3_large_reduced_paper.yaml"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", help="YAML recipe (configs/*.yaml; default: the paper's V3†, " + DEFAULT_RECIPE.name + ")"
    )
    p.add_argument(
        "--init", metavar="SPEC", help="start from: imagenet-large, imagenet-small, torchvision-coco or a .pt"
    )
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. train.lr=0.1 (repeatable)")  # fmt: skip
    p.add_argument("--output-dir", help="where checkpoints and logs go (default: the resumed run's folder)")
    p.add_argument(
        "--resume",
        help="a last.pt to continue from (its config is used; --set still applies); "
        "'auto': DIR/last.pt (or DIR/last.prev.pt) when it exists, else start fresh (for torchrun restarts)",
    )
    p.add_argument("--data-root", help="folder with annotations/instances_{train,val}2017.json, train2017/, val2017/")
    for split in ("train", "val"):
        p.add_argument(f"--{split}-json", help=f"COCO annotation file of the {split} split")
        p.add_argument(f"--{split}-images", help=f"image folder of the {split} split")
    p.add_argument("--no-val", action="store_true", help="train without evaluating")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        help="stop after this epoch (the lr schedule still spans train.epochs); continue later with --resume",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (each torchrun process takes its GPU)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    cli.setup_logging()
    resume_path = find_resume(args.resume, args.output_dir)
    resume = checkpoint.load(resume_path) if resume_path else None
    overrides = list(args.set)
    for key in ("data_root", "train_json", "train_images", "val_json", "val_images"):
        value = getattr(args, key)
        if value:
            overrides.append(f"data.{key}={value}")
    if resume is not None:
        if args.init:
            log.warning("--init %s ignored: a resumed run continues from its own weights", args.init)
        cfg = config.from_dict(config.apply_overrides(resume["config"], overrides))
    else:
        if not args.config:
            log.info("no --config: the paper's V3† recipe, %s", DEFAULT_RECIPE)
        cfg = config.load(args.config or DEFAULT_RECIPE, overrides)
    cfg.train.init = args.init or cfg.train.init  # set as given: a path is never parsed as YAML
    out_dir = Path(args.output_dir or (Path(resume_path).parent if resume_path else "runs/train"))
    dist = distributed.init(args.device)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    seed_everything(cfg.train.seed + dist.rank)
    try:
        train_set, val_set = build.build_datasets(cfg, validate=not args.no_val)
        if resume is not None and resume["categories"] != train_set.categories:
            raise UserError(f"{resume_path}: its categories differ from the dataset's")
        if dist.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.yaml").write_text(config.dump_yaml(cfg))
        log.info(
            "training on %d images (%d classes), %d processes, device %s, output %s",
            len(train_set),
            len(train_set.categories),
            dist.world_size,
            dist.device,
            out_dir,
        )
        model = None
        if cfg.train.init and resume is None:  # a resumed run has its own weights
            model = build.build_model(cfg.model)
            log.info(initialise(model, cfg.train.init, cfg.model.backbone, train_set.categories).message())
        t = build_training(cfg, train_set, val_set, dist, model)
        state = RunState()
        if resume is not None:
            state = restore_training(resume, t.model, t.optim)
        run_log = RunLog(out_dir, dist.is_main, fresh=resume is None, log_every=cfg.train.log_every)
        stop = StopRequest()

        def request_stop(signum: int) -> None:
            stop.requested = True
            log.warning("%s: saving a checkpoint after this step, then exiting", signal.Signals(signum).name)

        fault = FaultInjector.from_environment(dist.rank)
        if fault is not None:
            fault.attach(t.model)
        with cli.stop_requests(request_stop) as received:
            try:
                metrics = fit(t, state, out_dir, run_log, stop, fault=fault, stop_after=args.stop_after_epoch,
                              resumed_from=Path(resume_path) if resume_path else None)  # fmt: skip
            except TrainingInterrupted as exc:
                print(str(exc), file=sys.stderr)
                return 128 + (received[0] if received else signal.SIGINT)
        if dist.is_main and metrics:
            log.info("final AP %.4f AP50 %.4f; checkpoints in %s", metrics["AP"], metrics["AP50"], out_dir)
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    cli.run(main)
