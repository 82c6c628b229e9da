"""Fine-tuning pays: on a second synthetic domain, training from the demo's checkpoint against from scratch.

    python tools/benchmark.py finetune [--init runs/demo/train/best.pt | --train-source] [--epochs 12]
        [--train 600 --val 150] [--classes circle square triangle star hexagon] [--background tiles]
        [--output-dir runs/benchmark_finetune] [--set KEY=VALUE ...] [--device auto]

1. Dataset B (tools/make_synthetic.py): shapes shared with the demo plus new kinds, on another background.
2. The source checkpoint: --init (default the demo's best.pt, made by `make demo`); with --train-source,
   trained here first on the demo dataset with configs/synthetic_demo.yaml when it is missing.
3. Two runs of the same short recipe (configs/synthetic_demo.yaml, model.num_classes = len(classes), train.epochs
   = --epochs, evaluation every epoch, warmup --warmup-iters steps, then --set): from scratch, and with
   ``train_coco.py --init CKPT`` (shared classes keep their predictor rows, by name).
4. From each run's log.jsonl (one JSON line per epoch, with "AP" and "AP50" when evaluated): a table of AP and
   AP50 after every epoch, and the goal: the first epoch at which fine-tuning reaches the from-scratch run's
   FINAL AP50, met when that is at most a third of the epochs. The same as JSON in OUT/result.json:
   {"settings", "epochs": [{"epoch", "scratch_AP", "scratch_AP50", "finetune_AP", "finetune_AP50"}],
   "scratch_final_AP50", "finetune_first_epoch", "targets": {name: {"value", "goal", "met"}}}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from detector.inference.timing import machine, machine_line

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "configs/synthetic_demo.yaml"
GOAL_FRACTION = 1 / 3


def read_log(path: Path) -> dict[int, dict[str, float]]:
    """{epoch: {"AP", "AP50"}} of the evaluated epochs in a log.jsonl."""
    out = {}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if "AP" in rec and "AP50" in rec:
            out[int(rec["epoch"])] = {"AP": float(rec["AP"]), "AP50": float(rec["AP50"])}
    return out


def compare(scratch: dict[int, dict], finetune: dict[int, dict], epochs: int) -> dict:
    """The table rows, the from-scratch final AP50, fine-tuning's first epoch reaching it and the target."""
    runs = {"scratch": scratch, "finetune": finetune}
    rows = [{"epoch": e} | {f"{n}_{k}": r.get(e, {}).get(k) for n, r in runs.items() for k in ("AP", "AP50")}
            for e in range(1, epochs + 1)]  # fmt: skip
    final = scratch[max(scratch)]["AP50"] if scratch else None
    first = next((e for e in sorted(finetune) if final is not None and finetune[e]["AP50"] >= final), None)
    value = None if first is None else round(first / epochs, 4)
    met = first is not None and first <= epochs * GOAL_FRACTION + 1e-9
    target = {"value": value, "goal": round(GOAL_FRACTION, 4), "met": met}
    return {
        "epochs": rows,
        "scratch_final_AP50": final,
        "finetune_first_epoch": first,
        "targets": {"finetune_epochs_to_scratch_final_AP50_fraction": target},
    }


def _fmt(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.3f}"


def table_text(result: dict, epochs: int) -> str:
    """The side-by-side table and the goal, as printed."""
    lines = [f"{'epoch':>5}  {'scratch AP':>10} {'AP50':>6}  {'finetune AP':>11} {'AP50':>6}"]
    for r in result["epochs"]:
        s_ap, s_50, f_ap, f_50 = (_fmt(r[k]) for k in ("scratch_AP", "scratch_AP50", "finetune_AP", "finetune_AP50"))
        lines.append(f"{r['epoch']:>5}  {s_ap:>10} {s_50}  {f_ap:>11} {f_50}")
    first, final = result["finetune_first_epoch"], result["scratch_final_AP50"]
    target = result["targets"]["finetune_epochs_to_scratch_final_AP50_fraction"]
    reached = "never" if first is None else f"at epoch {first} of {epochs} ({first / epochs:.0%} of the schedule)"
    lines.append(f"\nfrom-scratch final AP50: {_fmt(final).strip()}; fine-tuning reaches it {reached}")
    verdict = "met" if target["met"] else "MISSED"
    lines.append(f"goal: within a third of the epochs (<= {epochs * GOAL_FRACTION:.1f}): {verdict}")
    return "\n".join(lines)


def run(cmd: list[str], log_file: Path) -> None:
    """Run a tool (python tools/...) from the repository root, its output to ``log_file``; raise on failure."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}  (> {log_file})", flush=True)
    with open(log_file, "w") as f:
        code = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{cmd[0]} failed (exit {code}); the end of {log_file}:\n{tail}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", default="runs/demo/train/best.pt", help="source checkpoint (trained on the demo data)")
    p.add_argument("--train-source", action="store_true", help="train the source checkpoint first when missing")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train", type=int, default=600, help="training images of dataset B")
    p.add_argument("--val", type=int, default=150, help="validation images of dataset B")
    p.add_argument("--classes", nargs="+", default=["circle", "square", "triangle", "star", "hexagon"])
    p.add_argument("--background", default="tiles")
    p.add_argument("--seed", type=int, default=1, help="seed of dataset B")
    p.add_argument("--warmup-iters", type=int, default=20)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="more overrides, for both runs (repeatable)")  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--output-dir", type=Path, default=Path("runs/benchmark_finetune"))


def main(args: argparse.Namespace) -> int:
    out, init = (ROOT / args.output_dir).resolve(), (ROOT / args.init).resolve()
    if not init.is_file():
        if not args.train_source:
            print(f"no source checkpoint at {init}: make it with `make demo` (or pass --train-source)", file=sys.stderr)
            return 2
        init = out / "source" / "train" / "best.pt"
        if not init.is_file():
            run(["tools/make_synthetic.py", "--out", str(out / "source" / "data")], out / "source" / "data.out")
            run(["tools/train_coco.py", "--config", RECIPE, "--output-dir", str(init.parent), "--data-root",
                 str(out / "source" / "data"), "--device", args.device], out / "source" / "train.out")  # fmt: skip
    data = out / "data"
    run(["tools/make_synthetic.py", "--out", str(data), "--train", str(args.train), "--val", str(args.val),
         "--seed", str(args.seed), "--classes", *args.classes, "--background", args.background],
        out / "data.out")  # fmt: skip
    overrides = [f"model.num_classes={len(args.classes)}", f"train.epochs={args.epochs}", "train.eval_every=1",
                 f"train.warmup_iters={args.warmup_iters}", *args.set]  # fmt: skip
    logs = {}
    for name, extra in (("scratch", []), ("finetune", ["--init", str(init)])):
        run_dir = out / name
        cmd = ["tools/train_coco.py", "--config", RECIPE, "--data-root", str(data), "--output-dir", str(run_dir),
               "--device", args.device, *extra, "--set", *overrides]  # fmt: skip
        run(cmd, out / f"{name}.out")
        logs[name] = read_log(run_dir / "log.jsonl")
    result = compare(logs["scratch"], logs["finetune"], args.epochs)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"settings": settings | {"init": str(init), "recipe": RECIPE, "overrides": overrides}, **result,
              "machine": machine()}  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"\ndataset B: {', '.join(args.classes)} on '{args.background}', {args.train}+{args.val} images")
    print(f"source checkpoint: {init}\n")
    print(table_text(result, args.epochs))
    print("\n" + machine_line(result["machine"]))
    print(f"wrote {out / 'result.json'}")
    return 0
