"""``odise-pl data check SET.yaml|DIR|NAME=FOLDER``: read every item of an evaluation set, report every problem.

``SET.yaml`` is a set file (a ``data:`` section, ``docs/custom_datasets.md``); ``DIR`` a folder in
the default layout of ``dataset: custom`` (``images/``, ``labels/*.png``, ``vocabulary.txt``, ignore
255); ``NAME[=FOLDER]`` a builtin set of ``odise-pl test --sets``. Each problem is one line on stdout,
``FILE: KIND: what is wrong``, then a summary line.

Exit status: 0 when every item reads cleanly; 1 when problems were found in the data (all of them
are listed); 2 (an ``odise-pl: error:`` line) when the set itself cannot be named or configured (a
missing or malformed set file, an unknown set name).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``odise-pl data check``."""
    p.add_argument(
        "set",
        metavar="SET.yaml|DIR",
        help="a set file with a data: section (docs/custom_datasets.md), a folder in the layout "
        "of dataset: custom (images/, labels/*.png, vocabulary.txt), or a builtin set NAME[=FOLDER]",
    )
    p.epilog = (
        "exit status: 0 all items read cleanly; 1 problems found (each listed as FILE: KIND: message); "
        "2 the set cannot be read as a set (bad set file or name)"
    )
    p.set_defaults(func=run)


def set_arguments(text: str) -> dict:
    """The data-module keyword arguments that ``text`` names."""
    from odise_pl.data_modules.set_file import is_set_file
    from odise_pl.engine.evaluate import PRESETS, parse_set
    from odise_pl.errors import ConfigError

    if Path(text).is_dir():
        return {"name": "semantic_seg", "dataset": "custom", "root": text}
    if not is_set_file(text) and text.partition("=")[0] not in PRESETS:
        raise ConfigError(
            f"odise-pl data check {text}: neither a set file (.yaml / .yml), an existing folder "
            f"nor a builtin set ({', '.join(PRESETS)}, optionally NAME=FOLDER); see "
            "docs/custom_datasets.md."
        )
    return parse_set(text)[1]


def run(args: argparse.Namespace) -> int:
    from odise_pl.data_modules.check import check_set

    report = check_set(set_arguments(args.set))
    for problem in report.problems:
        print(problem)
    if report.problems:
        files = len({p.path for p in report.problems})
        print(f"{len(report.problems)} problem(s) in {files} file(s) of {args.set} ({report.items} items read).")
        return 1
    print(f"{args.set}: {report.items} items read, no problems.")
    return 0
