"""Stable Diffusion from one original checkpoint file (``sd-v1-3.ckpt``, LDM layout), through diffusers.

The reference loads SD v1.3 from CompVis' single ``.ckpt``. Its weights are in the LDM layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``);
diffusers' own single-file converters (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, the functions behind ``from_single_file``) turn them into the
diffusers modules, here without fetching a config from the hub: the architectures are SD v1.x's
(:mod:`odise_pl.models.param_summary`), or the shapes given (``model.backbone.tiny_*``) for a
small file such as the reference fixture's. Every tensor of the file must be placed: an unknown
or missing key is an error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from odise_pl.errors import WeightsError

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pth", ".pt")


def is_single_file(pretrained: str) -> bool:
    path = Path(pretrained).expanduser()
    return path.suffix in SINGLE_FILE_SUFFIXES and path.is_file()


def read_ldm_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an LDM checkpoint (``.ckpt`` pickles are read ``weights_only``)."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
        state = data.get("state_dict", data) if isinstance(data, dict) else data
    if not isinstance(state, dict) or not any(k.startswith("model.diffusion_model.") for k in state):
        raise WeightsError(
            f"{path} is not a Stable Diffusion checkpoint in the original (LDM) layout: it has "
            f"no model.diffusion_model.* weights. Give sd-v1-3.ckpt (or v1-x), or a "
            f"diffusers-format directory."
        )
    return state


def load_single_file(
    path: str | Path,
    *,
    unet_config: Mapping | None = None,
    vae_config: Mapping | None = None,
    text_config: Mapping | None = None,
) -> dict:
    """``{"vae", "unet", "text_encoder", "tokenizer"}`` from one LDM-layout file (default: SD v1.x shapes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from odise_pl.models.backbones.clip_tokenizer import clip_bpe_tokenizer
    from odise_pl.models.backbones.ldm_layout import ldm_to_diffusers, split_ldm, text_encoder_names
    from odise_pl.models.param_summary import sd15_text_encoder_config, sd15_unet_config, sd15_vae_config

    state = read_ldm_state_dict(path)
    unet_config = dict(unet_config or sd15_unet_config())
    vae_config = dict(vae_config or sd15_vae_config())
    text_config = dict(text_config or sd15_text_encoder_config())
    unet, vae = UNet2DConditionModel(**unet_config), AutoencoderKL(**vae_config)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    parts = ldm_to_diffusers(split_ldm(state), unet.config, vae.config)
    parts["text"] = text_encoder_names(parts["text"], text_encoder)
    for name, module, weights in (
        ("UNet", unet, parts["unet"]),
        ("VAE", vae, parts["vae"]),
        ("text encoder", text_encoder, parts["text"]),
    ):
        result = module.load_state_dict(weights, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if missing or result.unexpected_keys:
            raise WeightsError(
                f"{path}: its {name} does not fit the SD v1 architecture (missing "
                f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}); is it a v1.x "
                f"checkpoint? (set model.backbone.tiny_unet / tiny_vae / tiny_text for other shapes)"
            )
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": clip_bpe_tokenizer()}


__all__ = ["SINGLE_FILE_SUFFIXES", "is_single_file", "load_single_file", "read_ldm_state_dict"]
