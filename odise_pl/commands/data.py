"""``odise-pl data synth|prepare-ade20k|check ...``: dataset tools.

Their arguments come from modules that import lightning, so each is added only when its sub-command is
used (:class:`~odise_pl.commands.lazy_parser.LazyArgumentParser`); its handler is the data module's own.
"""

from __future__ import annotations

import argparse

from odise_pl.commands.lazy_parser import LazyArgumentParser


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True, parser_class=LazyArgumentParser)
    data.add_parser("synth", help="generate procedural scenes in COCO panoptic format", populate=synth_arguments)
    data.add_parser(
        "prepare-ade20k",
        help="write ADE20K-150's semantic, panoptic and instance ground truth as the reference's scripts do",
        populate=prepare_ade20k_arguments,
    )
    data.add_parser("check", help="read every item of an evaluation set and report every problem (exit 1 if any)", populate=check_arguments)


def synth_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``odise-pl data synth``."""
    from odise_pl.data_modules import synthetic_shapes

    synthetic_shapes.add_synth_arguments(p)
    p.set_defaults(func=synthetic_shapes.run_synth)


def prepare_ade20k_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``odise-pl data prepare-ade20k``."""
    from odise_pl.data_modules import ade20k_prepare

    ade20k_prepare.add_prepare_arguments(p)
    p.set_defaults(func=ade20k_prepare.run_prepare)


def check_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``odise-pl data check``."""
    from odise_pl.commands import data_check

    data_check.add_arguments(p)
