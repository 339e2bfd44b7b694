"""The ``odise-pl`` command line.

Every sub-command is a module of :mod:`odise_pl.commands` with ``add_parser(subparsers)`` (its
arguments; it sets ``func``, the handler) and ``run(args)`` (the handler, returning the exit code).
:data:`COMMANDS` is the one table of them, imported by name when the parser is built. Start-up stays
light: a command module imports only argparse-level modules at the top and its implementation (torch,
lightning, ...) inside ``run`` (``tests/core/test_cli_imports.py`` checks the import graph).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from odise_pl import install_torchvision_compat
from odise_pl.errors import OdiseError

#: sub-command -> its module (``add_parser`` + ``run``), in ``--help`` order; adding a command is a module
#: and one line here
COMMANDS: dict[str, str] = {
    "fit": "odise_pl.commands.fit",
    "validate": "odise_pl.commands.validate",
    "test": "odise_pl.commands.test",
    "config": "odise_pl.commands.config",
    "demo": "odise_pl.commands.demo",
    "data": "odise_pl.commands.data",
    "summary": "odise_pl.commands.summary",
    "predict": "odise_pl.commands.predict",
    "eval": "odise_pl.commands.eval",
    "retrieval": "odise_pl.commands.retrieval",
    "sweep": "odise_pl.commands.sweep",
    "convert-reference": "odise_pl.commands.reference",  # one module adds both reference commands
    "verify-reference": "odise_pl.commands.reference",
    "app": "odise_pl.commands.app",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odise-pl", description="Open-vocabulary panoptic segmentation (ODISE).")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    install_torchvision_compat()  # the commands import lightning, open_clip...: torchvision must import
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OdiseError as err:
        print(f"odise-pl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
