"""Frozen parts: never trained, always in eval mode, and kept out of checkpoints when pretrained.

A part loaded from pretrained weights (hub id or local path) is re-loaded from its
source when a checkpoint is restored, so its weights are not written into the
project's checkpoints.  A frozen part built from a tiny config with random
weights *is* saved: nothing else could restore it.
"""

from __future__ import annotations

from torch import nn

_FROZEN = "_odise_frozen"
_PRETRAINED = "_odise_frozen_pretrained"


def freeze(module: nn.Module, *, pretrained: bool) -> nn.Module:
    """Freeze ``module`` in place (no grad, eval mode) and mark it. Returns the module."""
    module.requires_grad_(False)
    module.eval()
    setattr(module, _FROZEN, True)
    setattr(module, _PRETRAINED, bool(pretrained))
    return module


def is_frozen(module: nn.Module) -> bool:
    return bool(getattr(module, _FROZEN, False))


def keep_frozen_in_eval(root: nn.Module) -> None:
    """Put every frozen sub-module of ``root`` back into eval mode (call after ``train()``)."""
    for module in root.modules():
        if is_frozen(module):
            module.eval()


def pretrained_frozen_prefixes(root: nn.Module) -> list[str]:
    """State-dict key prefixes of the frozen sub-modules loaded from pretrained weights."""
    prefixes = []
    for name, module in root.named_modules(remove_duplicate=False):
        if is_frozen(module) and getattr(module, _PRETRAINED, False):
            if not any(name.startswith(p) for p in prefixes):
                prefixes.append(name + "." if name else "")
    return prefixes


def strip_pretrained_frozen(state_dict: dict, root: nn.Module, prefix: str = "") -> dict:
    """Drop the entries of pretrained frozen parts from a state dict of ``root``."""
    drop = tuple(prefix + p for p in pretrained_frozen_prefixes(root))
    if not drop:
        return state_dict
    return {k: v for k, v in state_dict.items() if not k.startswith(drop)}
