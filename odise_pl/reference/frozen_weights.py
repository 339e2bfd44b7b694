"""The frozen parts of a *full* reference state dict (SD in LDM layout, open_clip CLIP) -> odise-pl's.

Released checkpoints carry no frozen weight (they come from ``sd-v1-3.ckpt`` and open_clip's
``openai`` ViT-L-14-336), but the reference fixture's ``.pth`` holds the whole tiny model. Its
Stable Diffusion keys are in the original LDM layout, which diffusers' own single-file
converters translate (``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``): the same
code that reads an original ``sd-v1-*.ckpt`` (:mod:`odise_pl.models.backbones.ldm_layout`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from odise_pl.errors import ConfigError
from odise_pl.models.backbones.ldm_layout import ldm_to_diffusers, split_ldm, text_encoder_names

LDM_PREFIX = "backbone.feature_extractor.ldm_extractor.ldm.ldm."
CLIP_PREFIXES = (
    "backbone.feature_extractor.clip.clip.",
    "category_head.clip.clip.",
    "clip_head.clip.clip.",
    "word_head.clip.clip.",
)
#: buffers odise-pl recomputes; compared with the reference's where a full dict has them
RECOMPUTED = {
    "backbone.feature_extractor.ldm_extractor.ldm.uncond_inputs": "backbone.empty_text",
    "backbone.feature_extractor.ldm_extractor.shared_noise": "backbone.noise",
}


def frozen_state_dict(reference: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen SD and CLIP weights of a full reference dict, named as in ``model.state_dict()``.

    The reference's three CLIP copies must be identical (they are: one OpenAI checkpoint); odise-pl
    keeps one shared copy (``backbone.clip.model``).
    """
    backbone = model.backbone
    converted = ldm_to_diffusers(split_ldm(reference, LDM_PREFIX), backbone.unet.config, backbone.vae.config)
    out: dict[str, torch.Tensor] = {}
    converted["text"] = text_encoder_names(converted["text"], backbone.text_encoder)
    for part, module in (("unet", "unet"), ("vae", "vae"), ("text", "text_encoder")):
        out.update({f"backbone.{module}.{k}": v for k, v in converted[part].items()})
    clip_prefix = clip_state_prefix(model)
    first = CLIP_PREFIXES[0]
    clip = {k[len(first) :]: v for k, v in reference.items() if k.startswith(first)}
    for other in CLIP_PREFIXES[1:]:
        copy = {k[len(other) :]: v for k, v in reference.items() if k.startswith(other)}
        for k, v in copy.items():
            if k not in clip or not torch.equal(clip[k], v):
                raise ConfigError(
                    f"the reference's CLIP copies differ at {other}{k} (vs {first}{k}): odise-pl "
                    f"shares one CLIP, so a fixture or checkpoint must hold three identical copies"
                )
    out.update({clip_prefix + k: v for k, v in clip.items() if not k.endswith("attn_mask")})
    return out


def clip_state_prefix(model: torch.nn.Module) -> str:
    """The state-dict prefix of the shared CLIP's open_clip model (``backbone.clip.model.``)."""
    for name, module in model.named_modules():
        if name.endswith("clip") and hasattr(module, "model") and hasattr(module, "encode_text"):
            return f"{name}.model."
    raise ValueError("the model holds no shared CLIP")


__all__ = [
    "CLIP_PREFIXES",
    "LDM_PREFIX",
    "RECOMPUTED",
    "frozen_state_dict",
]
