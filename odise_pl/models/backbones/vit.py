"""What the frozen ``transformers`` ViT backbones (``mae``, ``dino``) share.

:class:`PretrainedViTBackbone` holds the frozen model as ``self.vit`` (ImageNet normalisation,
width and patch size from the model's config) and builds itself from its YAML section
(:meth:`~PretrainedViTBackbone.from_config`) or, for ``odise-pl summary``, on the meta device
(:meth:`~PretrainedViTBackbone.build_on_meta`).  A subclass says how to load its model
(:meth:`~PretrainedViTBackbone.load_model`), which architecture a config names without loading it
(:meth:`~PretrainedViTBackbone.architecture`, :meth:`~PretrainedViTBackbone.model_from_config`), and
how to read the patch tokens (:meth:`~odise_pl.models.backbones.base.ViTBackbone.patch_tokens`).
"""

from __future__ import annotations

import torch
from torch import nn

from odise_pl.models.backbones.base import ViTBackbone
from odise_pl.models.frozen import freeze

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedViTBackbone(ViTBackbone):
    """A frozen ``transformers`` ViT (``self.vit``) + ViTDet's simple feature pyramid.

    Args:
        model: the ``transformers`` model; its ``config`` gives ``hidden_size`` and ``patch_size``.
        pretrained: whether its weights come from a checkpoint (then they stay out of ours).
        out_channels: channels of every output level.
    """

    size_divisibility = 32

    def __init__(self, *, model: nn.Module, pretrained: bool, out_channels: int = 256) -> None:
        cfg = model.config
        super().__init__(width=cfg.hidden_size, patch_size=cfg.patch_size, pixel_mean=IMAGENET_MEAN,
                         pixel_std=IMAGENET_STD, out_channels=out_channels)
        self.vit = freeze(model, pretrained=pretrained)

    # ------------------------------------------------------------------ what a subclass provides
    @classmethod
    def load_model(cls, cfg) -> tuple[nn.Module, bool]:
        """``(model, loaded_from_pretrained)`` for the backbone's YAML section ``cfg``."""
        raise NotImplementedError

    @classmethod
    def architecture(cls, cfg):
        """The ``transformers`` config ``cfg`` names, without loading weights (a known hub id needs no download)."""
        raise NotImplementedError

    @classmethod
    def model_from_config(cls, config) -> nn.Module:
        """A randomly initialised model of a ``transformers`` config."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @classmethod
    def from_config(cls, cfg, **_: object) -> PretrainedViTBackbone:
        """The backbone of its YAML section (``pretrained``, ``out_channels``, ...)."""
        model, pretrained = cls.load_model(cfg)
        return cls(model=model, pretrained=pretrained, out_channels=cfg.out_channels)

    @classmethod
    def build_on_meta(cls, cfg, **_: object) -> PretrainedViTBackbone:
        """The real architecture on the meta device (``odise-pl summary``): a known hub id, or a local config."""
        config = cls.architecture(cfg)
        with torch.device("meta"):
            return cls(model=cls.model_from_config(config), pretrained=cfg.pretrained is not None,
                       out_channels=cfg.out_channels)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PretrainedViTBackbone"]
