"""Frozen CLIP (``open_clip``) as a dense feature backbone.

* ViT CLIPs: the input is resized so that the patches land at stride 16 (any side,
  not only multiples of the patch size); the patch tokens of the last block form one
  stride-16 map, turned into s2-s5 by ViTDet's simple feature pyramid (trainable adapter).
* ConvNeXt CLIPs: the four trunk stages are already at strides 4/8/16/32; each
  gets a 1x1 projection (trainable adapter), or, with ``adapter: none`` (FC-CLIP), goes to the
  mask generator as it is, at the trunk's own widths (192/384/768/1536 for ConvNeXt-L). The
  output also holds ``clip_dense``: the trunk's stride-32 map (``norm_pre(res5)``) of the same
  pass, which the open-vocabulary head can pool (``model.inference.clip_features: backbone``).

By default the CLIP is the process-wide shared one (``model.clip``, see
:mod:`odise_pl.models.clip_model`), which also classifies; ``model_name`` (+ ``pretrained``)
picks another one for the features only, e.g. ``ViT-L-14`` / ``openai`` beside a
ConvNeXt classifier.  Input normalisation: the CLIP's own mean/std (open_clip's preprocess config).
Padding (``padding``): ``black`` normalises the padded batch (the padding is black, ODISE);
``mean`` sets the padding to 0 *after* normalising, i.e. the mean colour (FC-CLIP normalises
each image, then pads); it needs the valid image sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.config.schema import choice
from odise_pl.errors import ConfigError
from odise_pl.models.backbones.base import LEVELS, STRIDES, Backbone, ShapeSpec
from odise_pl.models.backbones.pyramid import (  # noqa: F401  (SimpleFeaturePyramid: re-exported)
    SimpleFeaturePyramid,
    fit_to_size,
    group_norm,
    resize_to_patch_grid,
)
from odise_pl.models.clip_model import ClipSpec, SharedClip, load_clip
from odise_pl.registry import BACKBONES

ADAPTERS = ("conv_gn", "none")
PADDINGS = ("black", "mean")


@dataclass
class ClipBackboneConfig:
    """YAML keys of ``model.backbone`` with ``name: clip``."""

    out_channels: int = 256  # channels of every pyramid level (adapter conv_gn)
    model_name: str | None = None  # an open_clip model for the features; null: the shared model.clip
    pretrained: str | None = None  # its weights (open_clip tag, hf-hub:..., a file); null: random
    # conv_gn: a trainable 1x1 conv + GroupNorm per level (ODISE's zoo); none: the ConvNeXt stages as
    # they are, native widths (FC-CLIP: no trainable part in the backbone)
    adapter: str = choice("conv_gn", ADAPTERS)
    # black: padding pixels are 0 before normalising (ODISE); mean: 0 after normalising (FC-CLIP)
    padding: str = choice("black", PADDINGS)

    def problems(self) -> list[tuple[str, str]]:
        if self.adapter == "none" and self.model_name and "vit" in self.model_name.lower():
            return [
                ("adapter", "none needs a ConvNeXt CLIP (its stages are the pyramid); a ViT has one stride-16 map: use adapter: conv_gn.")
            ]
        return []


def vit_dense_tokens(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch tokens of an open_clip ``VisionTransformer`` at any input size.

    Args:
        visual: ``clip.model.visual`` (conv1, class_embedding, positional_embedding, ln_pre, transformer).
        pixels: (B, 3, H, W) CLIP-normalised images.

    Returns:
        (B, C, H/p, W/p) last-block patch tokens (p = patch size).
    """
    x = visual.conv1(pixels)  # (B, C, h, w)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
    pos = visual.positional_embedding.to(x.dtype)  # (1 + g*g, C)
    cls_pos, grid_pos = pos[:1], pos[1:]
    g = int(round(grid_pos.shape[0] ** 0.5))
    if (g, g) != (h, w):
        grid_pos = grid_pos.reshape(1, g, g, c).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(h, w), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(h * w, c)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, c).expand(b, 1, c)
    x = torch.cat([cls + cls_pos, x + grid_pos], dim=1)
    x = visual.ln_pre(x)
    x = visual.transformer(x)  # (B, 1 + h*w, C)
    return x[:, 1:].transpose(1, 2).reshape(b, c, h, w)


@BACKBONES.register("clip", config=ClipBackboneConfig)
class ClipBackbone(Backbone):
    """Dense features of a frozen CLIP image tower (ViT or ConvNeXt).

    Args:
        clip: the CLIP (the shared ``model.clip``, or the backbone's own ``model_name``).
        out_channels: channels of every output level (``adapter="conv_gn"``).
        adapter: ``"conv_gn"`` (trainable 1x1 conv + GroupNorm per level) or ``"none"`` (ConvNeXt
            only: the stage outputs as they are, at the trunk's widths).
        padding: ``"black"`` (normalise the padded batch) or ``"mean"`` (padding 0 after normalising;
            :meth:`forward` then needs ``image_sizes``).
    """

    size_divisibility = 32

    def __init__(self, *, clip: SharedClip, out_channels: int = 256, adapter: str = "conv_gn", padding: str = "black") -> None:
        super().__init__()
        if adapter not in ADAPTERS or padding not in PADDINGS:
            raise ConfigError(
                f"model.backbone (clip): adapter {adapter!r} / padding {padding!r}: use "
                f"adapter one of {ADAPTERS}, padding one of {PADDINGS}"
            )
        self.clip = clip
        self.out_channels = out_channels
        self.padding = padding
        #: the module passes the valid image sizes to forward (normalise, then pad)
        self.wants_image_sizes = padding == "mean"
        visual = clip.model.visual
        if clip.is_vit:
            if adapter == "none":
                raise ConfigError(
                    "model.backbone.adapter: none needs a ConvNeXt CLIP (its four stages are "
                    "the pyramid); a ViT CLIP has one stride-16 map: use adapter: conv_gn."
                )
            width = visual.conv1.out_channels
            self.patch = visual.conv1.kernel_size[0]
            self.adapter = SimpleFeaturePyramid(width, out_channels)
            self.widths = {k: out_channels for k in LEVELS}
        else:
            trunk = visual.trunk
            widths = [info["num_chs"] for info in trunk.feature_info][-4:]
            if adapter == "none":
                self.adapter = None
                self.widths = dict(zip(LEVELS, widths))
            else:
                self.adapter = nn.ModuleDict(
                    {k: nn.Sequential(nn.Conv2d(c, out_channels, 1), group_norm(out_channels)) for k, c in zip(LEVELS, widths)}
                )
                self.widths = {k: out_channels for k in LEVELS}

    @classmethod
    def from_config(cls, cfg: ClipBackboneConfig, *, clip: SharedClip, **_: object) -> ClipBackbone:
        if cfg.model_name:
            try:
                clip = load_clip(ClipSpec(cfg.model_name, cfg.pretrained))
            except (ValueError, FileNotFoundError) as err:
                raise ConfigError(
                    f"model.backbone (clip): {err} (model.backbone.model_name="
                    f"{cfg.model_name!r}, model.backbone.pretrained={cfg.pretrained!r}); "
                    "or set model_name: null to use model.clip."
                ) from err
        return cls(clip=clip, out_channels=cfg.out_channels, adapter=cfg.adapter, padding=cfg.padding)

    @classmethod
    def build_on_meta(cls, cfg: ClipBackboneConfig, *, clip: SharedClip, **_: object) -> ClipBackbone:
        """The real architecture on the meta device, no weights read (``odise-pl summary``)."""
        if cfg.model_name:
            import open_clip

            model = open_clip.create_model(cfg.model_name, pretrained=None, device="meta")
            clip = SharedClip(model, None, ClipSpec(cfg.model_name, cfg.pretrained), pretrained=cfg.pretrained is not None)
        return cls(clip=clip, out_channels=cfg.out_channels, adapter=cfg.adapter, padding=cfg.padding)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {k: ShapeSpec(self.widths[k], STRIDES[k]) for k in LEVELS}

    def frozen_parts(self) -> dict[str, nn.Module]:
        return {"clip": self.clip.model}

    def frozen_entry_points(self) -> list[tuple[nn.Module, str]]:
        return [(self.clip.model, "encode_image")]

    def normalize(self, images: torch.Tensor, image_sizes: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) in [0,255] -> CLIP-normalised pixels; ``padding="mean"`` zeroes them outside each
        image's valid ``(h, w)`` (as FC-CLIP: normalise, then pad with 0)."""
        pixels = self.clip.normalize(images)
        if self.padding == "mean" and image_sizes is not None:
            h_pad, w_pad = pixels.shape[-2:]
            rows = torch.arange(h_pad, device=pixels.device)
            cols = torch.arange(w_pad, device=pixels.device)
            sizes = torch.as_tensor(image_sizes, device=pixels.device).reshape(-1, 2)
            valid = (rows[None, :, None] < sizes[:, 0, None, None]) & (cols[None, None, :] < sizes[:, 1, None, None])
            pixels = pixels * valid[:, None].to(pixels.dtype)
        return pixels

    def forward(
        self, images: torch.Tensor, captions: list[str] | None = None, image_sizes: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,255] -> {"s2": (B,C,H/4,W/4), ..., "s5": (B,C,H/32,W/32)}, and for a ConvNeXt
        ``"clip_dense"`` (B,C5,H/32,W/32), the trunk's last map before its head (no gradient).

        ``image_sizes`` (B,2): the valid (h, w) of each padded image (read with ``padding="mean"``).
        """
        h, w = images.shape[-2:]
        pixels = self.normalize(images, image_sizes)
        visual = self.clip.model.visual
        extra = {}
        if self.clip.is_vit:
            pixels = resize_to_patch_grid(pixels, self.patch)  # tokens at stride 16
            with torch.no_grad():
                dense = vit_dense_tokens(visual, pixels)  # (B, C, ceil(H/16), ceil(W/16))
            feats = self.adapter(dense)
        else:
            with torch.no_grad():
                dense = visual.trunk.forward_intermediates(pixels, indices=4, intermediates_only=True)
                extra["clip_dense"] = visual.trunk.norm_pre(dense[-1])  # (B, C5, H/32, W/32)
            if self.adapter is None:
                feats = dict(zip(LEVELS, dense))
            else:
                feats = {k: self.adapter[k](f) for k, f in zip(LEVELS, dense)}
        return {**{k: fit_to_size(feats[k], h // STRIDES[k], w // STRIDES[k]) for k in LEVELS}, **extra}
