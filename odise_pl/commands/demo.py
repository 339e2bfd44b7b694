"""``odise-pl demo [--out DIR]``: the quick start: generate data, train the tiny model, print metrics."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="quick start: generate data, train the tiny model, print metrics")
    p.add_argument("-c", "--config", default="experiments/quickstart_diffusion.yaml")
    p.add_argument("--out", default="runs/demo", help="where data and runs go")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config
    from odise_pl.engine.fit import fit
    from odise_pl.engine.results import format_table

    out = Path(args.out)
    overrides = [f"run.root={out / 'runs'}", f"data.root={out / 'data'}", *args.overrides]
    cfg = load_config(args.config, overrides)
    results = fit(cfg, evaluate_untrained=True)
    print("\nQuick-start results (validation split of the generated data):\n")
    print(format_table(results))
    print(f"run directory: {results['run_dir']}  (tensorboard --logdir {out / 'runs'})")
    return 0
