"""``odise-pl validate [-c X.yaml] --ckpt RUN_DIR_OR_CKPT [key=value ...]``: a checkpoint on the validation split."""

from __future__ import annotations

import argparse

from odise_pl.commands.arguments import CKPT_HELP, add_config_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="validate a checkpoint")
    add_config_args(p, required=False)
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.set_defaults(func=run, stage="validate")
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate ``args.ckpt`` at ``args.stage`` (``validate`` or ``test``); ``test --sets`` prints one table."""
    from odise_pl.engine.evaluate import evaluate
    from odise_pl.engine.results import format_table
    from odise_pl.engine.run_files import config_for

    cfg = config_for(args.ckpt, args.config, args.overrides)
    if getattr(args, "sets", None):
        from odise_pl.engine.evaluate import run as run_sets

        print(run_sets(cfg, args.ckpt, args.sets))
        return 0
    results = evaluate(cfg, args.ckpt, stage=args.stage)
    print(format_table(results))
    return 0
