"""The ``dino`` backbone: a frozen self-supervised DINOv2 or DINO (v1) ViT through ``transformers``.

``pretrained`` is a hub id or a local directory; its ``config.json`` decides the model:
``dinov2`` -> ``Dinov2Model`` (``facebook/dinov2-large``, patch 14), ``dinov2_with_registers``
-> ``Dinov2WithRegistersModel`` (register tokens are dropped with the CLS token), ``vit`` ->
``ViTModel`` without its pooler (DINO v1: ``facebook/dino-vitb16``).  The last layer's
(layer-normed) patch tokens form one map; the input is resized so that the patches land at
stride 16 (so 14-pixel patches work on any side, :class:`~.base.ViTBackbone`), position
embeddings are interpolated, and ViTDet's simple feature pyramid gives s2-s5.

``pretrained: null`` builds a tiny random model of ``tiny_version`` (``v2``: DINOv2 with
14-pixel patches, ``v1``: ViT with 16-pixel patches).  Input normalisation: ImageNet mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from odise_pl.config.schema import choice
from odise_pl.errors import ConfigError
from odise_pl.models.backbones.vit import PretrainedViTBackbone
from odise_pl.registry import BACKBONES

#: published models: (version, hidden_size, layers, heads, patch_size, image_size, swiglu), for the
#: meta-device summary without a download (facts of the hub ``config.json`` files)
KNOWN_ARCHITECTURES = {
    "facebook/dinov2-small": ("v2", 384, 12, 6, 14, 518, False),
    "facebook/dinov2-base": ("v2", 768, 12, 12, 14, 518, False),
    "facebook/dinov2-large": ("v2", 1024, 24, 16, 14, 518, False),
    "facebook/dinov2-giant": ("v2", 1536, 40, 24, 14, 518, True),
    "facebook/dino-vits16": ("v1", 384, 12, 6, 16, 224, False),
    "facebook/dino-vitb16": ("v1", 768, 12, 12, 16, 224, False),
    "facebook/dino-vits8": ("v1", 384, 12, 6, 8, 224, False),
    "facebook/dino-vitb8": ("v1", 768, 12, 12, 8, 224, False),
}
TINY = {"v2": ("v2", 32, 2, 2, 14, 56, False), "v1": ("v1", 32, 2, 2, 16, 64, False)}
_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "vit")


@dataclass
class DinoBackboneConfig:
    """YAML keys of ``model.backbone`` with ``name: dino``."""

    pretrained: str | None = "facebook/dinov2-large"  # hub id or local dir; null: tiny random weights
    tiny_version: str = choice("v2", tuple(TINY))  # the tiny model when pretrained is null
    out_channels: int = 256  # channels of every pyramid level


def dino_config(version: str, hidden: int, layers: int, heads: int, patch: int, image_size: int, swiglu: bool):
    """A ``Dinov2Config`` (v2) or ``ViTConfig`` (v1, DINO) of the given sizes."""
    from transformers import Dinov2Config, ViTConfig

    if version == "v2":
        return Dinov2Config(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            mlp_ratio=4,
            patch_size=patch,
            image_size=image_size,
            use_swiglu_ffn=swiglu,
        )
    return ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        patch_size=patch,
        image_size=image_size,
    )


def model_from_config(config) -> nn.Module:
    """The ``transformers`` model class of a DINO config (random weights)."""
    from transformers import Dinov2Model, Dinov2WithRegistersModel, ViTModel

    if config.model_type == "vit":
        return ViTModel(config, add_pooling_layer=False)
    return {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel}[config.model_type](config)


def _tiny_version(version: str) -> str:
    if version not in TINY:
        raise ConfigError(f"model.backbone.tiny_version={version!r} is not one of {', '.join(TINY)} (v2: DINOv2, v1: DINO ViT).")
    return version


def load_dino(pretrained: str | None, tiny_version: str = "v2") -> tuple[nn.Module, bool]:
    """``(model, loaded_from_pretrained)`` for a hub id, a local directory, or ``None`` (tiny random).

    Raises:
        ConfigError: the source cannot be loaded or is not a DINO model; the message says what to give.
    """
    from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel, ViTModel

    if pretrained is None:
        return model_from_config(dino_config(*TINY[_tiny_version(tiny_version)])), False
    local = Path(pretrained).expanduser()
    source = str(local) if local.exists() else pretrained
    hint = (
        "Give a hub id such as 'facebook/dinov2-large' or 'facebook/dino-vitb16' (downloaded once into "
        "the Hugging Face cache) or a local directory holding config.json and model.safetensors; or null "
        "for tiny random weights."
    )
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type not in _MODEL_TYPES:
            raise ConfigError(
                f"model.backbone.pretrained={pretrained!r} is a '{config.model_type}' model, not DINO ({', '.join(_MODEL_TYPES)}). {hint}"
            )
        if config.model_type == "vit":
            return ViTModel.from_pretrained(source, add_pooling_layer=False), True
        cls = Dinov2Model if config.model_type == "dinov2" else Dinov2WithRegistersModel
        return cls.from_pretrained(source), True
    except (OSError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model.backbone.pretrained={pretrained!r}: cannot load a DINO model ({err}). " + hint) from err


@BACKBONES.register("dino", config=DinoBackboneConfig)
class DinoBackbone(PretrainedViTBackbone):
    """Frozen DINOv2 / DINO ViT + simple feature pyramid.

    Args:
        model: ``Dinov2Model``, ``Dinov2WithRegistersModel`` or ``ViTModel`` (no pooler).
        pretrained: whether its weights come from a checkpoint (then they stay out of ours).
        out_channels: channels of every output level.
    """

    def __init__(self, *, model: nn.Module, pretrained: bool, out_channels: int = 256) -> None:
        super().__init__(model=model, pretrained=pretrained, out_channels=out_channels)
        self.num_prefix_tokens = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)  # CLS (+ registers)

    @classmethod
    def load_model(cls, cfg: DinoBackboneConfig) -> tuple[nn.Module, bool]:
        return load_dino(cfg.pretrained, cfg.tiny_version)

    @classmethod
    def architecture(cls, cfg: DinoBackboneConfig):
        from transformers import AutoConfig

        if cfg.pretrained is None:
            return dino_config(*TINY[_tiny_version(cfg.tiny_version)])
        if cfg.pretrained in KNOWN_ARCHITECTURES:
            return dino_config(*KNOWN_ARCHITECTURES[cfg.pretrained])
        return AutoConfig.from_pretrained(cfg.pretrained)

    @classmethod
    def model_from_config(cls, config) -> nn.Module:
        return model_from_config(config)

    def frozen_parts(self) -> dict[str, nn.Module]:
        return {"vit": self.vit}

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pixels.shape
        kwargs = {"interpolate_pos_encoding": True} if self.vit.config.model_type == "vit" else {}
        out = self.vit(pixel_values=pixels.to(self.vit.dtype), **kwargs)
        tokens = out.last_hidden_state[:, self.num_prefix_tokens :]  # (B, gh*gw, C)
        return tokens.transpose(1, 2).reshape(b, -1, h // self.patch_size, w // self.patch_size)
