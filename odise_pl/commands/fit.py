"""``odise-pl fit -c X.yaml [--resume RUN_DIR_OR_CKPT] [--init-from RUN_DIR_OR_WEIGHTS] [key=value ...]``."""

from __future__ import annotations

import argparse

from odise_pl.commands.arguments import add_config_args
from odise_pl.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="train an experiment")
    add_config_args(p, required=False)
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR_OR_CKPT",
        help="resume a run (its directory or a checkpoint in it); another checkpoint starts a new "
        "version from it. Without it, an existing run.version resumes from its last.ckpt",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="RUN_DIR_OR_WEIGHTS",
        help="fine-tune: a new run starts from these weights (a run directory, .ckpt or .safetensors; "
        "weights only, not a resume); without -c the run directory's config is used",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config
    from odise_pl.engine.fit import fit
    from odise_pl.engine.results import format_table
    from odise_pl.engine.run_files import config_for

    if args.config is None and args.init_from is None:
        raise ConfigError("odise-pl fit needs -c CONFIG (or --init-from RUN_DIR, whose config.yaml is then used).")
    cfg = load_config(args.config, args.overrides) if args.config is not None else config_for(args.init_from, None, args.overrides)
    results = fit(cfg, ckpt_path=args.resume, init_from=args.init_from)
    print(format_table(results))
    print(f"run directory: {results['run_dir']}")
    return 0
