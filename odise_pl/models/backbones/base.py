"""The backbone contract shared by every feature extractor.

A backbone is an ``nn.Module`` whose ``forward(images, captions=None)`` takes
``images`` (B, 3, H, W) float pixels in [0, 255], RGB, H and W multiples of
``size_divisibility``, and returns ``{"s2": (B, C2, H/4, W/4), "s3": .../8,
"s4": .../16, "s5": .../32}`` (a ConvNeXt ``clip`` backbone adds ``"clip_dense"``, the CLIP trunk's
stride-32 map, for FC-CLIP's out-of-vocabulary head).  It normalises its own input.  Its frozen
weights are marked with :func:`odise_pl.models.frozen.freeze`; only its own
adapters (projections, captioner) train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LEVELS = ("s2", "s3", "s4", "s5")
STRIDES = {"s2": 4, "s3": 8, "s4": 16, "s5": 32}


@dataclass(frozen=True)
class ShapeSpec:
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: subclasses set ``size_divisibility`` and implement ``forward``/``output_shape``."""

    #: input sides must be multiples of this (the collate pads to it)
    size_divisibility: int = 32

    def output_shape(self) -> dict[str, ShapeSpec]:
        raise NotImplementedError

    def frozen_parts(self) -> dict[str, nn.Module]:
        """The frozen sub-modules by role (``model.speed.frozen_weights`` casts these); none by default."""
        return {}

    def frozen_entry_points(self) -> list[tuple[nn.Module, str]]:
        """``(module, method name)`` through which the frozen parts are called (``model.speed.frozen_autocast``
        runs these under bf16). By default every frozen part's ``forward``."""
        return [(part, "forward") for part in self.frozen_parts().values()]

    def train(self, mode: bool = True) -> Backbone:
        from odise_pl.models.frozen import keep_frozen_in_eval

        super().train(mode)
        keep_frozen_in_eval(self)
        return self


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

    def __init__(self, *, width: int, patch_size: int, pixel_mean: tuple, pixel_std: tuple,
                 out_channels: int = 256) -> None:
        super().__init__()
        from odise_pl.models.backbones.pyramid import SimpleFeaturePyramid  # pyramid.py imports this module

        self.width, self.patch_size, self.out_channels = int(width), int(patch_size), int(out_channels)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.adapter = SimpleFeaturePyramid(self.width, self.out_channels)

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, g_h * p, g_w * p) normalised pixels -> (B, C, g_h, g_w) last-layer patch tokens (no CLS)."""
        raise NotImplementedError

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {k: ShapeSpec(self.out_channels, STRIDES[k]) for k in LEVELS}

    def forward(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) in [0, 255] -> {"s2": (B, C, H/4, W/4), ..., "s5": (B, C, H/32, W/32)}."""
        from odise_pl.models.backbones.pyramid import fit_to_size, resize_to_patch_grid

        h, w = images.shape[-2:]
        pixels = (images.float() / 255.0 - self.pixel_mean) / self.pixel_std
        pixels = resize_to_patch_grid(pixels, self.patch_size)       # (B, 3, ceil(H/16) p, ceil(W/16) p)
        with torch.no_grad():
            tokens = self.patch_tokens(pixels)                        # (B, C, ceil(H/16), ceil(W/16))
        feats = self.adapter(tokens.float())
        return {k: fit_to_size(feats[k], h // STRIDES[k], w // STRIDES[k]) for k in LEVELS}
