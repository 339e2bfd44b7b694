"""``odise-pl summary -c X.yaml``: trainable and frozen parameters per part, built on the meta device.

No weights are needed: real architectures (Stable Diffusion v1.x UNet/VAE/text
encoder, CLIP ViT-L/14-336, ...) are instantiated on ``torch.device("meta")``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command's modules are imported when it runs (the CLI starts light)
    import torch
    from omegaconf import DictConfig

    from odise_pl.models.param_summary import ParamRow


def build_on_meta(cfg: DictConfig) -> torch.nn.Module:
    """The model of ``cfg`` with real shapes on the meta device (no weights loaded, no data read)."""
    import open_clip
    import torch

    from odise_pl.models.backbones.diffusion_unet import (
        DiffusionUNetBackbone,
        clip_bpe_tokenizer,
    )
    from odise_pl.models.builder import section_to_dataclass
    from odise_pl.models.clip_model import ClipSpec, SharedClip
    from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator
    from odise_pl.models.param_summary import sd15_parts_on_meta
    from odise_pl.models.supervision.base import TextEmbeddings
    from odise_pl.registry import BACKBONES, SUPERVISIONS

    m = cfg.model
    pretrained = m.clip.pretrained is not None
    clip_model = open_clip.create_model(m.clip.model_name, pretrained=None, device="meta")
    clip = SharedClip(clip_model, None, ClipSpec(m.clip.model_name, m.clip.pretrained), pretrained=pretrained)
    entry = BACKBONES.get(m.backbone.name)
    bb_cfg = section_to_dataclass(m.backbone, entry.config)
    with torch.device("meta"):
        if m.backbone.name == "diffusion_unet" and getattr(bb_cfg, "pretrained", None) and not bb_cfg.tiny:
            backbone = DiffusionUNetBackbone(**sd15_parts_on_meta(), tokenizer=clip_bpe_tokenizer(), clip=clip,
                                             pretrained=True)
        elif hasattr(entry.cls, "build_on_meta"):  # the real architecture without reading weights
            backbone = entry.cls.build_on_meta(bb_cfg, clip=clip)
        else:
            backbone = entry.cls.from_config(bb_cfg, clip=clip)
        mask_generator = Mask2FormerMaskGenerator.from_config(
            _mg(m), backbone.output_shape())
        dim = clip.embed_dim
        text = TextEmbeddings(torch.zeros(1, dim), torch.zeros(1, dtype=torch.long), 1)
        sup_entry = SUPERVISIONS.get(m.supervision.name)
        supervision = sup_entry.cls.from_config(
            section_to_dataclass(m.supervision, sup_entry.config), train_text=text,
            void_text_embed=torch.zeros(dim), embed_dim=mask_generator.mask_embed.embed_dim,
            train_names=[["x"]], clip=clip)
    model = torch.nn.Module()
    model.backbone, model.mask_generator, model.supervision = backbone, mask_generator, supervision
    return model


def _mg(m):
    from odise_pl.config.schema import MaskGeneratorConfig
    from odise_pl.models.builder import typed

    return typed(m.mask_generator, MaskGeneratorConfig)


def summarize(cfg: DictConfig) -> tuple[list[ParamRow], str]:
    from odise_pl.models.param_summary import count_parameters, format_summary

    rows = count_parameters(build_on_meta(cfg))
    return rows, format_summary(rows)


def cmd_summary(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config

    _, text = summarize(load_config(args.config, args.overrides))
    print(text)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="trainable / frozen parameters per part (meta device, no weights)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_summary)
