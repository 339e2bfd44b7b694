"""Tiny timm trunks registered under their own names, for the tiny open_clip configs in ``clip_configs/``.

``fcclip_tiny_convnext`` is the trunk of the FC-CLIP reference fixture's tiny CLIP
(``fcclip-tiny-convnext_large``, ``shared/fcclip_fixture`` README, patch P3): timm's own
``ConvNeXt`` with convnext_large's block type (``conv_mlp=False``, layer scale 1e-6, ``norm_pre``
= Identity) at depths 1,1,1,1 and widths 32/64/96/128. open_clip builds timm towers by model name
only, hence the registered entry point. Importing this module registers it (once).
"""

from __future__ import annotations

import timm
from timm.models import convnext, register_model


def _fcclip_tiny_convnext(pretrained: bool = False, **kwargs) -> convnext.ConvNeXt:
    args = dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128))
    return convnext._create_convnext("convnext_tiny", pretrained=pretrained, **dict(args, **kwargs))


_fcclip_tiny_convnext.__name__ = "fcclip_tiny_convnext"  # timm registers a function under its name

if "fcclip_tiny_convnext" not in timm.list_models("fcclip_tiny_convnext"):
    register_model(_fcclip_tiny_convnext)
