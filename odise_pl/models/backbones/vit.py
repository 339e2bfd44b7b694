"""What the frozen ``transformers`` ViT backbones (``mae``, ``dino``) share.

:class:`PretrainedViTBackbone` holds the frozen model as ``self.vit`` (ImageNet normalisation,
width and patch size from the model's config) and builds itself from its YAML section
(:meth:`~PretrainedViTBackbone.from_config`) or, for ``odise-pl summary``, on the meta device
(:meth:`~PretrainedViTBackbone.build_on_meta`).  A subclass says how to load its model
(:meth:`~PretrainedViTBackbone.load_model`), which architecture a config names without loading it
(:meth:`~PretrainedViTBackbone.architecture`, :meth:`~PretrainedViTBackbone.model_from_config`), and
how to read the patch tokens (:meth:`ViTBackbone.patch_tokens`).
"""

from __future__ import annotations

import torch
from torch import nn

from odise_pl.models.backbones.base import LEVELS, STRIDES, Backbone, ShapeSpec
from odise_pl.models.backbones.pyramid import SimpleFeaturePyramid, fit_to_size, resize_to_patch_grid
from odise_pl.models.frozen import freeze


class ViTBackbone(Backbone):
    """A frozen single-scale ViT turned into s2-s5 by ViTDet's simple feature pyramid.

    Subclasses set :attr:`patch_size`, :attr:`width` and the normalisation, and implement
    :meth:`patch_tokens`.  The input is resized so that the ViT's patches land at stride 16
    (:func:`~odise_pl.models.backbones.pyramid.resize_to_patch_grid`): sides need not be multiples
    of the patch size (DINOv2's 14, say).  Only the pyramid (``adapter``) trains.

    Args:
        width: channels C of the ViT's tokens.
        patch_size: the ViT's patch side p.
        pixel_mean, pixel_std: the ViT's input normalisation, in the [0, 1] range (RGB).
        out_channels: channels of every output level.
    """

    def __init__(self, *, width: int, patch_size: int, pixel_mean: tuple, pixel_std: tuple, out_channels: int = 256) -> None:
        super().__init__()

        self.width, self.patch_size, self.out_channels = int(width), int(patch_size), int(out_channels)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.adapter = SimpleFeaturePyramid(self.width, self.out_channels)

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, g_h * p, g_w * p) normalised pixels -> (B, C, g_h, g_w) last-layer patch tokens (no CLS)."""
        raise NotImplementedError

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {k: ShapeSpec(self.out_channels, STRIDES[k]) for k in LEVELS}

    def forward(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) in [0, 255] -> {"s2": (B, C, H/4, W/4), ..., "s5": (B, C, H/32, W/32)}."""
        h, w = images.shape[-2:]
        pixels = (images.float() / 255.0 - self.pixel_mean) / self.pixel_std
        pixels = resize_to_patch_grid(pixels, self.patch_size)  # (B, 3, ceil(H/16) p, ceil(W/16) p)
        with torch.no_grad():
            tokens = self.patch_tokens(pixels)  # (B, C, ceil(H/16), ceil(W/16))
        feats = self.adapter(tokens.float())
        return {k: fit_to_size(feats[k], h // STRIDES[k], w // STRIDES[k]) for k in LEVELS}


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
        super().__init__(
            width=cfg.hidden_size, patch_size=cfg.patch_size, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD, out_channels=out_channels
        )
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
            return cls(model=cls.model_from_config(config), pretrained=cfg.pretrained is not None, out_channels=cfg.out_channels)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PretrainedViTBackbone"]
