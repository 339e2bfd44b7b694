"""``odise-pl config -c X.yaml [key=value ...]``: print the resolved config."""

from __future__ import annotations

import argparse

from odise_pl.commands.arguments import add_config_args


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="print the resolved config")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from odise_pl.config import print_config

    print(print_config(args.config, args.overrides))
    return 0
