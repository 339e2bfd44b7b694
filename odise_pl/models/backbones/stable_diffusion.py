"""Stable Diffusion's parts (VAE, UNet, text encoder, tokenizer): loaded through diffusers / transformers
by hub id or local diffusers-format directory, or built tiny with random weights (tests, the quick start).

The backbone that taps them is :mod:`odise_pl.models.backbones.diffusion_unet`; one LDM-layout file
(the reference's ``.ckpt``) is :mod:`odise_pl.models.backbones.sd_single_file`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from odise_pl.errors import ConfigError, WeightsError
from odise_pl.models.backbones.clip_tokenizer import clip_bpe_tokenizer

SD_SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_LAYOUT = (
    "a diffusers-format directory:\n  {p}/\n"
    "    vae/           config.json, diffusion_pytorch_model.safetensors\n"
    "    unet/          config.json, diffusion_pytorch_model.safetensors\n"
    "    text_encoder/  config.json, model.safetensors\n    tokenizer/     vocab.json + merges.txt "
    "(or tokenizer.json)\nor a Hugging Face hub id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5'. "
    "For random tiny weights set model.backbone.pretrained: null (or tiny: true)."
)


@dataclass
class StableDiffusionParts:
    vae: nn.Module
    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    pretrained: bool


def load_stable_diffusion(pretrained: str) -> StableDiffusionParts:
    """Load VAE, UNet, text encoder and tokenizer from a hub id or a local diffusers-format directory.

    Raises:
        WeightsError: ``pretrained`` is neither a complete local directory nor a reachable hub id;
            the message names the path and shows the expected layout.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(pretrained).expanduser()
    if path.exists():
        missing = [sub for sub in SD_SUBFOLDERS if not (path / sub).is_dir()]
        if missing:
            lacks = ", ".join(sub + "/" for sub in missing)
            raise WeightsError(f"Stable Diffusion directory '{path}' lacks {lacks}. Expected " + _LAYOUT.format(p=path))
        source = str(path)
    elif _HUB_ID.fullmatch(pretrained):
        source = pretrained
    else:
        raise WeightsError(f"Stable Diffusion weights '{pretrained}' not found. Expected " + _LAYOUT.format(p=path))
    try:
        return StableDiffusionParts(
            vae=AutoencoderKL.from_pretrained(source, subfolder="vae"),
            unet=UNet2DConditionModel.from_pretrained(source, subfolder="unet"),
            text_encoder=CLIPTextModel.from_pretrained(source, subfolder="text_encoder"),
            tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
            pretrained=True,
        )
    except OSError as err:
        if path.exists():
            raise WeightsError(f"cannot load Stable Diffusion from '{path}' ({err}). Expected " + _LAYOUT.format(p=path)) from err
        raise WeightsError(
            f"Stable Diffusion weights '{pretrained}' are neither a local directory nor "
            f"loadable from the hub ({err}). Expected " + _LAYOUT.format(p=path)
        ) from err


def tiny_unet_config(cross_attention_dim: int = 32) -> dict:
    """SD v1.x UNet structure (4 levels, same block types) at widths (32, 64, 64, 64)."""
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64, 64, 64),
        attention_head_dim=8,
        norm_num_groups=32,
        cross_attention_dim=cross_attention_dim,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def tiny_vae_config() -> dict:
    """SD VAE structure (4 levels, 2 resnets per level, latent factor 8) at widths (8, 16, 16, 16)."""
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16),
        sample_size=128,
        scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )


def tiny_text_config(hidden_size: int = 32) -> dict:
    """A 2-layer CLIP text transformer over CLIP's real BPE vocabulary (49408 tokens, 77 positions)."""
    return dict(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=hidden_size,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def build_tiny_stable_diffusion(
    *,
    unet_config: dict | None = None,
    vae_config: dict | None = None,
    text_config: dict | None = None,
    unet_overrides: dict | None = None,
    vae_overrides: dict | None = None,
    text_overrides: dict | None = None,
) -> StableDiffusionParts:
    """Random-weight SD parts from tiny configs (defaults: ``tiny_*_config()``).

    ``unet_overrides`` / ``vae_overrides`` replace keys of the (default) configs; they are the YAML
    keys ``model.backbone.tiny_unet`` / ``tiny_vae`` and are checked against diffusers' arguments.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = dict(text_config or tiny_text_config())
    if text_overrides:
        unknown = sorted(set(text_overrides) - set(CLIPTextConfig().to_dict()))
        if unknown:
            raise ConfigError(
                f"model.backbone.tiny_text: unknown key(s) {', '.join(unknown)}; use the names of "
                f"transformers' CLIPTextConfig (e.g. hidden_size, num_hidden_layers)"
            )
        text_config.update(text_overrides)
    unet_kwargs = checked_overrides(
        unet_config or tiny_unet_config(text_config["hidden_size"]), unet_overrides, UNet2DConditionModel, "tiny_unet"
    )
    vae_kwargs = checked_overrides(vae_config or tiny_vae_config(), vae_overrides, AutoencoderKL, "tiny_vae")
    return StableDiffusionParts(
        vae=_build(AutoencoderKL, vae_kwargs, "tiny_vae"),
        unet=_build(UNet2DConditionModel, unet_kwargs, "tiny_unet"),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
        tokenizer=clip_bpe_tokenizer(),
        pretrained=False,
    )


def checked_overrides(base: dict, overrides: dict | None, cls: type, key: str) -> dict:
    """``base`` with the YAML's ``model.backbone.<key>`` overrides, checked against ``cls``'s arguments."""
    if not overrides:
        return dict(base)
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"model.backbone.{key}: unknown key(s) {', '.join(unknown)}; use the argument names "
            f"of diffusers' {cls.__name__} (e.g. block_out_channels, norm_num_groups, "
            f"layers_per_block)"
        )
    merged = dict(base)
    merged.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return merged


def _build(cls: type, kwargs: dict, key: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, RuntimeError, IndexError, KeyError, AssertionError) as err:
        raise ConfigError(f"model.backbone.{key}: diffusers' {cls.__name__} rejects {kwargs}: {err}") from None
