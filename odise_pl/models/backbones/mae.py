"""The ``mae`` backbone: a frozen masked-autoencoder ViT (``transformers``' ViTMAE encoder).

ViTMAE shuffles the patches and drops ``mask_ratio`` of them before the encoder.  Here the
mask ratio is 0 (every patch is kept), the shuffle is the identity (a fixed increasing
``noise``), and the tokens are put back in raster order with the model's own
``ids_restore`` anyway, so the map is right whatever order the encoder saw.  Position
embeddings are interpolated to the input grid; the input is resized so that the 16-pixel
patches of ViTMAE (14 for ViT-H) land at stride 16 (:class:`~.base.ViTBackbone`), then
ViTDet's simple feature pyramid gives s2-s5.

Weights: ``pretrained`` is a hub id (``facebook/vit-mae-large``) or a local directory
with ``config.json`` + weights, loaded by ``ViTMAEModel.from_pretrained`` (the decoder
weights of a pre-training checkpoint are ignored).  ``pretrained: null`` builds a tiny
random ViTMAE (tests, quick runs).  Input normalisation: ImageNet mean/std, as MAE was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from odise_pl.errors import ConfigError
from odise_pl.models.backbones.vit import PretrainedViTBackbone
from odise_pl.registry import BACKBONES

#: published ViTMAE encoders: (hidden_size, layers, heads, intermediate_size, patch_size), for the
#: meta-device summary without a download (facts of the hub ``config.json`` files)
KNOWN_ARCHITECTURES = {
    "facebook/vit-mae-base": (768, 12, 12, 3072, 16),
    "facebook/vit-mae-large": (1024, 24, 16, 4096, 16),
    "facebook/vit-mae-huge": (1280, 32, 16, 5120, 14),
}
TINY = (32, 2, 2, 64, 16)


@dataclass
class MaeBackboneConfig:
    """YAML keys of ``model.backbone`` with ``name: mae``."""

    pretrained: str | None = "facebook/vit-mae-large"  # hub id or local dir; null: tiny random weights
    out_channels: int = 256  # channels of every pyramid level


def vit_mae_config(hidden: int, layers: int, heads: int, mlp: int, patch: int, image_size: int = 224):
    """A ``ViTMAEConfig`` of the given sizes with masking switched off."""
    from transformers import ViTMAEConfig

    return ViTMAEConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        patch_size=patch,
        image_size=image_size,
        mask_ratio=0.0,
    )


def load_vit_mae(pretrained: str | None) -> tuple[nn.Module, bool]:
    """``(ViTMAEModel, loaded_from_pretrained)`` for a hub id, a local directory, or ``None`` (tiny random).

    Raises:
        ConfigError: the directory or hub id cannot be loaded; the message says what was expected.
    """
    from transformers import ViTMAEModel

    if pretrained is None:
        return ViTMAEModel(vit_mae_config(*TINY, image_size=64)), False
    local = Path(pretrained).expanduser()
    try:
        return ViTMAEModel.from_pretrained(str(local) if local.exists() else pretrained, mask_ratio=0.0), True
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.backbone.pretrained={pretrained!r}: cannot load a ViTMAE model ({err}). Give a hub id "
            "such as 'facebook/vit-mae-large' (downloaded once into the Hugging Face cache) or a local "
            "directory holding config.json and model.safetensors; or null for tiny random weights."
        ) from err


@BACKBONES.register("mae", config=MaeBackboneConfig)
class MaeBackbone(PretrainedViTBackbone):
    """Frozen ViTMAE encoder (no masking, raster patch order) + simple feature pyramid.

    Args:
        model: a ``transformers.ViTMAEModel`` (its ``mask_ratio`` is set to 0 here).
        pretrained: whether its weights come from a checkpoint (then they stay out of ours).
        out_channels: channels of every output level.
    """

    def __init__(self, *, model: nn.Module, pretrained: bool, out_channels: int = 256) -> None:
        model.config.mask_ratio = 0.0
        super().__init__(model=model, pretrained=pretrained, out_channels=out_channels)

    @classmethod
    def load_model(cls, cfg: MaeBackboneConfig) -> tuple[nn.Module, bool]:
        return load_vit_mae(cfg.pretrained)

    @classmethod
    def architecture(cls, cfg: MaeBackboneConfig):
        from transformers import ViTMAEConfig

        if cfg.pretrained is None:
            return vit_mae_config(*TINY, image_size=64)
        if cfg.pretrained in KNOWN_ARCHITECTURES:
            return vit_mae_config(*KNOWN_ARCHITECTURES[cfg.pretrained])
        return ViTMAEConfig.from_pretrained(cfg.pretrained, mask_ratio=0.0)

    @classmethod
    def model_from_config(cls, config) -> nn.Module:
        from transformers import ViTMAEModel

        return ViTMAEModel(config)

    def frozen_parts(self) -> dict[str, nn.Module]:
        return {"vit": self.vit}

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pixels.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        noise = torch.arange(gh * gw, device=pixels.device, dtype=torch.float32).expand(b, -1)  # identity order
        out = self.vit(pixel_values=pixels.to(self.vit.dtype), noise=noise, interpolate_pos_encoding=True)
        tokens = out.last_hidden_state[:, 1:]  # (B, gh*gw, C), drop CLS
        restore = out.ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        tokens = torch.gather(tokens, 1, restore)  # raster order
        return tokens.transpose(1, 2).reshape(b, -1, gh, gw)
