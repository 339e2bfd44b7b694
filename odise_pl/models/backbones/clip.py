"""Frozen CLIP (``open_clip``) as a dense feature backbone.

* ViT CLIPs: the patch tokens of the last block form one map at stride = patch
  size; it is resampled to stride 16 and turned into s2-s5 by a ViTDet-style
  simple feature pyramid (trainable adapter).
* ConvNeXt CLIPs: the four trunk stages are already at strides 4/8/16/32; each
  gets a 1x1 projection (trainable adapter).

The CLIP itself is the process-wide shared one (:mod:`odise_pl.models.clip_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.backbones.base import LEVELS, STRIDES, Backbone, ShapeSpec
from odise_pl.models.clip_model import SharedClip
from odise_pl.registry import BACKBONES


@dataclass
class ClipBackboneConfig:
    out_channels: int = 256   # channels of every pyramid level


def vit_dense_tokens(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch tokens of an open_clip ``VisionTransformer`` at any input size.

    Args:
        visual: ``clip.model.visual`` (conv1, class_embedding, positional_embedding, ln_pre, transformer).
        pixels: (B, 3, H, W) CLIP-normalised images.

    Returns:
        (B, C, H/p, W/p) last-block patch tokens (p = patch size).
    """
    x = visual.conv1(pixels)                                  # (B, C, h, w)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)                          # (B, h*w, C)
    pos = visual.positional_embedding.to(x.dtype)             # (1 + g*g, C)
    cls_pos, grid_pos = pos[:1], pos[1:]
    g = int(round(grid_pos.shape[0] ** 0.5))
    if (g, g) != (h, w):
        grid_pos = grid_pos.reshape(1, g, g, c).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(h, w), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(h * w, c)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, c).expand(b, 1, c)
    x = torch.cat([cls + cls_pos, x + grid_pos], dim=1)
    x = visual.ln_pre(x)
    x = visual.transformer(x)                                 # (B, 1 + h*w, C)
    return x[:, 1:].transpose(1, 2).reshape(b, c, h, w)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple pyramid: one stride-16 map -> strides 4/8/16/32 with ``out_channels`` each."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half, quarter = max(in_channels // 2, 8), max(in_channels // 4, 8)
        self.scales = nn.ModuleDict({
            "s2": nn.Sequential(nn.ConvTranspose2d(in_channels, half, 2, 2), nn.GroupNorm(_groups(half), half),
                                nn.GELU(), nn.ConvTranspose2d(half, quarter, 2, 2)),
            "s3": nn.ConvTranspose2d(in_channels, half, 2, 2),
            "s4": nn.Identity(),
            "s5": nn.MaxPool2d(2, 2),
        })
        widths = {"s2": quarter, "s3": half, "s4": in_channels, "s5": in_channels}
        self.outputs = nn.ModuleDict({
            k: nn.Sequential(nn.Conv2d(widths[k], out_channels, 1, bias=False),
                             nn.GroupNorm(_groups(out_channels), out_channels),
                             nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                             nn.GroupNorm(_groups(out_channels), out_channels))
            for k in LEVELS
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: self.outputs[k](self.scales[k](x)) for k in LEVELS}


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1


@BACKBONES.register("clip", config=ClipBackboneConfig)
class ClipBackbone(Backbone):
    """Dense features of the shared frozen CLIP image tower.

    Args:
        clip: the shared CLIP.
        out_channels: channels of every output level.
    """

    size_divisibility = 32

    def __init__(self, *, clip: SharedClip, out_channels: int = 256) -> None:
        super().__init__()
        self.clip = clip
        self.out_channels = out_channels
        visual = clip.model.visual
        if clip.is_vit:
            width = visual.conv1.out_channels
            self.patch = visual.conv1.kernel_size[0]
            self.adapter = SimpleFeaturePyramid(width, out_channels)
        else:
            trunk = visual.trunk
            widths = [info["num_chs"] for info in trunk.feature_info][-4:]
            self.adapter = nn.ModuleDict({
                k: nn.Sequential(nn.Conv2d(c, out_channels, 1), nn.GroupNorm(_groups(out_channels), out_channels))
                for k, c in zip(LEVELS, widths)
            })

    @classmethod
    def from_config(cls, cfg: ClipBackboneConfig, *, clip: SharedClip, **_: object) -> "ClipBackbone":
        return cls(clip=clip, out_channels=cfg.out_channels)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {k: ShapeSpec(self.out_channels, STRIDES[k]) for k in LEVELS}

    def forward(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,255] -> {"s2": (B,C,H/4,W/4), ..., "s5": (B,C,H/32,W/32)}."""
        h, w = images.shape[-2:]
        pixels = self.clip.normalize(images)
        visual = self.clip.model.visual
        with torch.no_grad():
            if self.clip.is_vit:
                dense = vit_dense_tokens(visual, pixels)
            else:
                dense = visual.trunk.forward_intermediates(pixels, indices=4, intermediates_only=True)
        if self.clip.is_vit:
            dense = F.interpolate(dense, size=(h // 16, w // 16), mode="bilinear", align_corners=False)
            feats = self.adapter(dense)
        else:
            feats = {k: self.adapter[k](f) for k, f in zip(LEVELS, dense)}
        return {k: _fit(feats[k], h // STRIDES[k], w // STRIDES[k]) for k in LEVELS}


def _fit(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return x if x.shape[-2:] == (h, w) else F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
