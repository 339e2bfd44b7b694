"""An ``argparse`` parser whose arguments are added the first time it is used.

``odise-pl`` builds its whole command tree at start-up, but some sub-commands take
their argument definitions from modules that import torch, lightning and friends
(``odise-pl data synth`` from :mod:`odise_pl.data_modules.synthetic_shapes`, ``odise-pl
eval semantic`` from :mod:`odise_pl.metrics.semantic_iou`). A
:class:`LazyArgumentParser` registered with ``populate=fn`` calls ``fn(parser)`` only
when that sub-command is parsed or its help / usage is printed, so ``odise-pl --help``
and the other commands never import those modules; what the user sees is unchanged.

Example:
    >>> import argparse
    >>> root = argparse.ArgumentParser(prog="tool")
    >>> sub = root.add_subparsers(dest="command", parser_class=LazyArgumentParser)
    >>> _ = sub.add_parser("go", help="go somewhere", populate=lambda p: p.add_argument("--to"))
    >>> root.parse_args(["go", "--to", "x"]).to
    'x'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["LazyArgumentParser"]


class LazyArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that runs ``populate(self)`` once, before its first use.

    Args:
        populate: adds the arguments (and ``set_defaults(func=...)``); None: an ordinary parser.
        *args, **kwargs: those of :class:`argparse.ArgumentParser`.
    """

    def __init__(self, *args, populate: Callable[[argparse.ArgumentParser], object] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.populate = populate

    def ensure_populated(self) -> None:
        """Add the arguments now if they have not been added yet."""
        if self.populate is not None:
            populate, self.populate = self.populate, None
            populate(self)

    def parse_known_args(self, args=None, namespace=None):
        self.ensure_populated()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.ensure_populated()
        return super().format_usage()

    def format_help(self) -> str:
        self.ensure_populated()
        return super().format_help()
