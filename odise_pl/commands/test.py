"""``odise-pl test [-c X.yaml] --ckpt RUN_DIR_OR_CKPT [--sets SET ...] [key=value ...]``: a checkpoint on the
test split, or on several evaluation sets (one Markdown + CSV table)."""

from __future__ import annotations

import argparse

from odise_pl.commands import validate
from odise_pl.commands.arguments import CKPT_HELP, add_config_args
from odise_pl.evaluation_sets import EVALUATION_SETS

run = validate.run  # the same evaluation, at the test stage


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("test", help="test a checkpoint")
    add_config_args(p, required=False)
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument(
        "--sets",
        nargs="+",
        default=None,
        metavar="SET",
        help="evaluate on several sets, one Markdown + CSV table: config (this experiment's "
        f"data), {', '.join(EVALUATION_SETS)}; NAME=FOLDER gives a set's dataset folder; NAME=SET.yaml is a "
        "set of your own (a file with a data: section, docs/custom_datasets.md)",
    )
    p.set_defaults(func=run, stage="test")
    return p
