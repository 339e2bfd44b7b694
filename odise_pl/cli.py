"""The ``odise-pl`` command line.

Start-up stays light: building the parser imports only argparse-level modules (no
torch, lightning, transformers...); each command imports its implementation when
it runs (``tests/core/test_cli_imports.py`` checks the import graph).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from odise_pl.commands.lazy_parser import LazyArgumentParser
from odise_pl.errors import ConfigError, OdiseError


def _add_config_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("-c", "--config", required=required,
                   help="experiment YAML file" if required else
                   "experiment YAML file (default: the config.yaml of the run directory --ckpt is in)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=100")


#: what --ckpt accepts (validate, test, predict)
CKPT_HELP = ("a run directory (config.yaml, categories.json, weights.safetensors), a .ckpt or a .safetensors "
             "file; the training categories travel with it, so no training data is needed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odise-pl", description="Open-vocabulary panoptic segmentation (ODISE).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train an experiment")
    _add_config_args(p, required=False)
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                   help="resume a run (its directory or a checkpoint in it); another checkpoint starts a new "
                        "version from it. Without it, an existing run.version resumes from its last.ckpt")
    p.add_argument("--init-from", default=None, metavar="RUN_DIR_OR_WEIGHTS",
                   help="fine-tune: a new run starts from these weights (a run directory, .ckpt or .safetensors; "
                        "weights only, not a resume); without -c the run directory's config is used")
    p.set_defaults(func=cmd_fit)

    for name in ("validate", "test"):
        p = sub.add_parser(name, help=f"{name} a checkpoint")
        _add_config_args(p, required=False)
        p.add_argument("--ckpt", required=True, help=CKPT_HELP)
        if name == "test":
            p.add_argument("--sets", nargs="+", default=None, metavar="SET",
                           help="evaluate on several sets, one Markdown + CSV table: config (this experiment's "
                                "data), ade20k_panoptic, ade20k_847, pascal_context_459, pascal_context_59, "
                                "pascal_voc_21; NAME=FOLDER gives a set's dataset folder; NAME=SET.yaml is a "
                                "set of your own (a file with a data: section, docs/custom_datasets.md)")
        p.set_defaults(func=cmd_evaluate, stage=name)

    p = sub.add_parser("config", help="print the resolved config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("demo", help="quick start: generate data, train the tiny model, print metrics")
    p.add_argument("-c", "--config", default="experiments/quickstart_diffusion.yaml")
    p.add_argument("--out", default="runs/demo", help="where data and runs go")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True, parser_class=LazyArgumentParser)
    # their arguments come from modules that import lightning: added only when the command is used
    data.add_parser("synth", help="generate procedural scenes in COCO panoptic format",
                    populate=synth_arguments)
    data.add_parser("prepare-ade20k", help="write ADE20K-150's semantic, panoptic and instance ground "
                    "truth as the reference's scripts do", populate=prepare_ade20k_arguments)
    data.add_parser("check", help="read every item of an evaluation set and report every problem "
                    "(exit 1 if any)", populate=check_arguments)

    # further commands live in odise_pl/commands/<name>.py, each with add_parser(subparsers); those
    # modules import only light modules at the top (their handlers import the implementation)
    for name in COMMAND_MODULES:
        importlib.import_module(f"odise_pl.commands.{name}").add_parser(sub)
    return parser


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


#: modules of odise_pl/commands/ that add a sub-command (one line each)
COMMAND_MODULES: list[str] = [
    "summary",
    "predict",
    "eval",
    "retrieval",
    "sweep",
    "reference",
]


def cmd_config(args: argparse.Namespace) -> int:
    from odise_pl.config import print_config

    print(print_config(args.config, args.overrides))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config
    from odise_pl.engine.fit import fit
    from odise_pl.engine.results import format_table
    from odise_pl.engine.run_files import config_for

    if args.config is None and args.init_from is None:
        raise ConfigError("odise-pl fit needs -c CONFIG (or --init-from RUN_DIR, whose config.yaml is then used).")
    cfg = (load_config(args.config, args.overrides) if args.config is not None
           else config_for(args.init_from, None, args.overrides))
    results = fit(cfg, ckpt_path=args.resume, init_from=args.init_from)
    print(format_table(results))
    print(f"run directory: {results['run_dir']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from odise_pl.engine.evaluate import evaluate
    from odise_pl.engine.results import format_table
    from odise_pl.engine.run_files import config_for

    cfg = config_for(args.ckpt, args.config, args.overrides)
    if getattr(args, "sets", None):
        from odise_pl.engine.evaluate import run

        print(run(cfg, args.ckpt, args.sets))
        return 0
    results = evaluate(cfg, args.ckpt, stage=args.stage)
    print(format_table(results))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OdiseError as err:
        print(f"odise-pl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
