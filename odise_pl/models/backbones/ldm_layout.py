"""Stable Diffusion weights in the original LDM layout -> diffusers' and transformers' names.

An original checkpoint (``sd-v1-3.ckpt``, or the reference fixture's ``.pth``) keeps the UNet under
``model.diffusion_model.*``, the VAE under ``first_stage_model.*`` and the text encoder under
``cond_stage_model.transformer.*``; diffusers' own single-file converters (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``) rename the first two. Used by the single-file loader
(:mod:`odise_pl.models.backbones.sd_single_file`) and the reference converter
(:mod:`odise_pl.reference.frozen_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def split_ldm(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, dict[str, torch.Tensor]]:
    """An LDM-layout state dict (optionally under ``prefix``) -> ``{"unet", "vae", "text"}`` in LDM names.

    ``unet`` keeps ``model.diffusion_model.*``, ``vae`` ``first_stage_model.*`` (what diffusers'
    converters expect); ``text`` is the SD v1 text encoder's ``transformers`` CLIPTextModel dict.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text": {}}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith("model.diffusion_model."):
            parts["unet"][name] = value
        elif name.startswith("first_stage_model."):
            parts["vae"][name] = value
        elif name.startswith("cond_stage_model.transformer."):
            parts["text"][name[len("cond_stage_model.transformer.") :]] = value
    return parts


def ldm_to_diffusers(
    parts: dict[str, dict[str, torch.Tensor]], unet_config: Mapping, vae_config: Mapping
) -> dict[str, dict[str, torch.Tensor]]:
    """LDM-layout UNet / VAE weights -> diffusers' names, with diffusers' single-file converters."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet = convert_ldm_unet_checkpoint(dict(parts["unet"]), dict(unet_config))
    vae = convert_ldm_vae_checkpoint(dict(parts["vae"]), dict(vae_config))
    text = {k: v for k, v in parts["text"].items() if not k.endswith("position_ids")}
    return {"unet": unet, "vae": vae, "text": text}


def text_encoder_names(weights: Mapping[str, torch.Tensor], text_encoder: torch.nn.Module) -> dict:
    """SD v1's ``CLIPTextModel`` weights (``text_model.*``) under the names of the installed transformers
    (>= 5 names the model's parameters without the ``text_model.`` prefix)."""
    if any(k.startswith("text_model.") for k in text_encoder.state_dict()):
        return dict(weights)
    return {k.removeprefix("text_model."): v for k, v in weights.items()}
