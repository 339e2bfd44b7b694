"""Arguments that several commands share (``-c CONFIG key=value ...``, ``--ckpt``)."""

from __future__ import annotations

import argparse

#: what --ckpt accepts (validate, test, predict)
CKPT_HELP = (
    "a run directory (config.yaml, categories.json, weights.safetensors), a .ckpt or a .safetensors "
    "file; the training categories travel with it, so no training data is needed"
)


def add_config_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``-c/--config`` and the ``key=value`` overrides."""
    p.add_argument(
        "-c",
        "--config",
        required=required,
        help="experiment YAML file" if required else "experiment YAML file (default: the config.yaml of the run directory --ckpt is in)",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=100")


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    """``--ckpt RUN_DIR|X.ckpt|X.safetensors`` and an optional ``-c`` (default: the run's own config)."""
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help="experiment YAML file the checkpoint was trained with (default: the config.yaml of the run directory --ckpt is in)",
    )
    p.add_argument("--ckpt", required=True, help=CKPT_HELP + " (e.g. one written by convert-reference)")
