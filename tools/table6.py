"""Print Table 6 of the paper side by side with our models: params, MAdds, optional CPU latency and mAP.

    python tools/table6.py [--latency [--runtime NAME]] [--map RESULTS.json ...] [--json]
    python tools/table6.py --write-recipes configs

Counts follow the paper's convention (see detector.paper.complexity): conv weights and biases, no BatchNorm,
MAdds of the convolutions at 320x320. Latency: 1 thread, batch 1, median model time on this CPU, in PyTorch
eager or with --runtime in ONNX Runtime, OpenVINO or ExecuTorch, fp32, bf16 or int8
(benchmarks/table6_latency.py): the paper measured its column with a mobile runtime in fp32 and int8.
--map takes metrics.json files written by tools/eval_coco.py (their model config names the row) or
ROW=FILE pairs, e.g. "V3†=runs/v3/metrics.json"; a file of TF-trained weights (paper-v3-*) must come from
`eval_coco.py --split minival2014`, the split of the paper's cells (val2017 was mostly in their training data).
--write-recipes DIR writes the 11 paper recipes (table6_*_paper.yaml, from detector.paper.table6.recipe_yaml)
into DIR and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside tools/, not in the package
from benchmarks.table6_latency import RUNTIMES, model_latency_ms  # noqa: E402
from detector import cli  # noqa: E402
from detector.build import build_model  # noqa: E402
from detector.errors import UserError  # noqa: E402
from detector.inference.timing import machine, machine_line  # noqa: E402
from detector.paper.complexity import conv_params, multiply_adds  # noqa: E402
from detector.paper.table6 import REFERENCE_ROW, ROWS, map_cell, recipe_file_name, recipe_yaml  # noqa: E402


def read_map(arg: str) -> tuple[str, tuple[float, str]]:
    """ROW=FILE or FILE -> (row name, (mAP in percent, the split it was measured on)): ``map_cell``."""
    name, path = arg.split("=", 1) if "=" in arg and not Path(arg).exists() else (None, arg)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read metrics: {exc}") from None
    row, value, split = map_cell(data, path, name)
    return row, (value, split)


def measure(latency: bool, repeats: int, runtime: str = "torch") -> list[dict]:
    results = []
    for row in ROWS:
        cfg = row.model_config()
        model = build_model(cfg).eval()
        x = torch.zeros(1, 3, *cfg.image_size)  # multiply-adds do not depend on the values
        results.append(
            {
                "row": row.name,
                "params_m": conv_params(model) / 1e6,
                "madds_b": multiply_adds(model, x) / 1e9,
                "paper_params_m": row.paper_params_m,
                "paper_madds_b": row.paper_madds_b,
                "latency_ms": model_latency_ms(cfg, runtime, repeats) if latency else None,
                "runtime": runtime if latency else None,
                "paper_latency_ms": row.paper_latency_ms,
                "map": None,
                "paper_map": row.paper_map,
            }
        )
    return results


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    ref = next(r for r in rows if r["row"] == REFERENCE_ROW)
    head = (
        f"{'row':<13}{'mAP':>6}{'paper':>7}{'params M':>10}{'paper':>7}{'d%':>6}{'MAdds B':>9}{'paper':>7}"
        f"{'d%':>6}{'ms CPU':>8}{'/V3†':>6}{'ms Pixel1':>10}{'/V3†':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        d_params = 100 * (r["params_m"] / r["paper_params_m"] - 1)
        d_madds = 100 * (r["madds_b"] / r["paper_madds_b"] - 1)
        ratio = r["latency_ms"] / ref["latency_ms"] if r["latency_ms"] is not None else None
        print(
            f"{r['row']:<13}{fmt(r['map'], '.1f'):>6}{r['paper_map']:>7.1f}{r['params_m']:>10.3f}"
            f"{r['paper_params_m']:>7.2f}{d_params:>+6.1f}{r['madds_b']:>9.3f}{r['paper_madds_b']:>7.2f}"
            f"{d_madds:>+6.1f}{fmt(r['latency_ms'], '.1f'):>8}{fmt(ratio, '.2f'):>6}"
            f"{r['paper_latency_ms']:>10.0f}{r['paper_latency_ms'] / ref['paper_latency_ms']:>6.2f}"
        )
    print("params: conv weights + biases, BatchNorm not counted, 91 class slots; MAdds: convolutions at 320x320")
    splits = [f"{r['row']} on {r['map_split']}" for r in rows if r.get("map_split")]
    if splits:
        print(f"mAP: COCO box AP, {', '.join(splits)}; the paper's on COCO 2014 minival (TF's 8,059 images)")
    if ref["runtime"]:
        print(f"ms CPU: median model time, 1 thread, batch 1, {ref['runtime']}; {machine_line(machine())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", action="store_true", help="measure CPU latency (1 thread, batch 1)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per model for --latency")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch", help="what --latency times (default torch)")
    parser.add_argument("--map", nargs="+", default=[], metavar="RESULTS", help="metrics.json or ROW=FILE")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per row")
    parser.add_argument("--write-recipes", metavar="DIR", type=Path, help="write the 11 paper recipes and exit")
    args = parser.parse_args()
    if args.write_recipes is not None:
        for row in ROWS:
            path = args.write_recipes / recipe_file_name(row)
            try:
                args.write_recipes.mkdir(parents=True, exist_ok=True)
                path.write_text(recipe_yaml(row), encoding="utf-8")
            except OSError as exc:
                raise UserError(f"{path}: cannot write recipe: {exc.strerror}") from None
            print(path)
        return 0
    maps = dict(read_map(a) for a in args.map)
    if args.runtime != "torch" and not args.latency:
        parser.error("--runtime applies to --latency")
    rows = measure(args.latency, args.repeats, args.runtime)
    for r in rows:
        r["map"], r["map_split"] = maps.get(r["row"], (None, None))
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    cli.run(main)
