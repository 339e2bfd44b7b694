"""``odise-pl summary -c X.yaml``: trainable and frozen parameters per part, built on the meta device.

No weights are needed: real architectures (Stable Diffusion v1.x UNet/VAE/text
encoder, CLIP ViT-L/14-336, ...) are instantiated on ``torch.device("meta")``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command's modules are imported when it runs (the CLI starts light)
    from omegaconf import DictConfig

    from odise_pl.models.param_summary import ParamRow


def summarize(cfg: DictConfig) -> tuple[list[ParamRow], str]:
    from odise_pl.models.on_meta import build_on_meta
    from odise_pl.models.param_summary import count_parameters, format_summary

    rows = count_parameters(build_on_meta(cfg))
    return rows, format_summary(rows)


def run(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config

    _, text = summarize(load_config(args.config, args.overrides))
    print(text)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="trainable / frozen parameters per part (meta device, no weights)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=run)
