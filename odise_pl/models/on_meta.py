"""The model of a config with real shapes on the meta device: no weights loaded, no data read.

What ``odise-pl summary`` counts and what the reference converter checks a released checkpoint against.
A backbone whose real architecture needs weights to build (Stable Diffusion v1.x, CLIP, MAE, DINO)
provides ``build_on_meta(cfg, clip=...)``; the others are built from their config as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odise_pl.config.schema import MaskGeneratorConfig

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig


def build_on_meta(cfg: DictConfig) -> torch.nn.Module:
    """The model of ``cfg`` with real shapes on the meta device (no weights loaded, no data read)."""
    import open_clip
    import torch

    from odise_pl.models.builder import section_to_dataclass
    from odise_pl.models.clip_model import ClipSpec, SharedClip
    from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator
    from odise_pl.models.supervision.base import TextEmbeddings
    from odise_pl.registry import BACKBONES, SUPERVISIONS

    m = cfg.model
    pretrained = m.clip.pretrained is not None
    clip_model = open_clip.create_model(m.clip.model_name, pretrained=None, device="meta")
    clip = SharedClip(clip_model, None, ClipSpec(m.clip.model_name, m.clip.pretrained), pretrained=pretrained)
    entry = BACKBONES.get(m.backbone.name)
    bb_cfg = section_to_dataclass(m.backbone, entry.config)
    with torch.device("meta"):
        if hasattr(entry.cls, "build_on_meta"):  # the real architecture without reading weights
            backbone = entry.cls.build_on_meta(bb_cfg, clip=clip)
        else:
            backbone = entry.cls.from_config(bb_cfg, clip=clip)
        mask_generator = Mask2FormerMaskGenerator.from_config(_mg(m), backbone.output_shape())
        dim = clip.embed_dim
        text = TextEmbeddings(torch.zeros(1, dim), torch.zeros(1, dtype=torch.long), 1)
        sup_entry = SUPERVISIONS.get(m.supervision.name)
        supervision = sup_entry.cls.from_config(
            section_to_dataclass(m.supervision, sup_entry.config),
            train_text=text,
            void_text_embed=torch.zeros(dim),
            embed_dim=mask_generator.mask_embed.embed_dim,
            train_names=[["x"]],
            clip=clip,
        )
    model = torch.nn.Module()
    model.backbone, model.mask_generator, model.supervision = backbone, mask_generator, supervision
    return model


def _mg(m):
    from odise_pl.models.builder import typed

    return typed(m.mask_generator, MaskGeneratorConfig)
