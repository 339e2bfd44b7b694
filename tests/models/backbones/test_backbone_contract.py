"""The backbone contract, checked for every registered backbone (torchmetrics' ``MetricTester`` habit).

Registering a backbone is enough to have it checked here: it is built from its smallest section
(``TINY``, else ``{pretrained: null}``: every backbone must build a tiny random-weight model from
that, DESIGN.md) and must

* return ``s2..s5`` at strides 4/8/16/32 with the channels ``output_shape()`` states, finite;
* keep its frozen parts frozen (no grad) and in eval mode after ``.train()``, and pass gradients
  to its own adapters;
* leave no frozen weight in the state dict once its frozen parts count as loaded from pretrained
  weights (``strip_pretrained_frozen``, what ``OdiseModule.on_save_checkpoint`` writes).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from odise_pl.models import frozen
from odise_pl.models.backbones.base import LEVELS, STRIDES
from odise_pl.models.builder import section_to_dataclass
from odise_pl.registry import BACKBONES

#: the smallest section of each built-in backbone (a new one without an entry gets ``{pretrained: null}``)
TINY = {
    "clip": {"out_channels": 16},
    "diffusion_unet": {
        "pretrained": None,
        "window_size": None,
        "projection_dim": 32,
        "bottleneck_width": 16,
        "tiny_unet": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "attention_head_dim": 1},
        "tiny_vae": {"block_out_channels": [8, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 4},
    },
    "dino": {"pretrained": None, "out_channels": 16},
    "mae": {"pretrained": None, "out_channels": 16},
}
BATCH, SIDE = 2, 64


def build_tiny(name: str, clip):
    entry = BACKBONES.get(name)
    section = {"name": name, **TINY.get(name, {"pretrained": None})}
    torch.manual_seed(0)
    return entry.cls.from_config(section_to_dataclass(section, entry.config), clip=clip)


@contextlib.contextmanager
def frozen_parts_as_pretrained(root: torch.nn.Module):
    """Mark every frozen part of ``root`` as loaded from pretrained weights; restore the marks after
    (the tiny CLIP is shared by the whole test session)."""
    marked = [m for m in root.modules() if frozen.is_frozen(m)]
    saved = [m.__dict__.get(frozen._PRETRAINED) for m in marked]
    for m in marked:
        setattr(m, frozen._PRETRAINED, True)
    try:
        yield marked
    finally:
        for m, value in zip(marked, saved):
            if value is None:
                m.__dict__.pop(frozen._PRETRAINED, None)
            else:
                setattr(m, frozen._PRETRAINED, value)


@pytest.fixture(scope="module", params=BACKBONES.names())
def backbone(request, tiny_clip):
    return build_tiny(request.param, tiny_clip)


def test_levels_strides_and_channels_match_output_shape(backbone):
    shapes = backbone.output_shape()
    assert list(shapes) == list(LEVELS)
    assert {k: s.stride for k, s in shapes.items()} == STRIDES
    side = -(-SIDE // backbone.size_divisibility) * backbone.size_divisibility
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.rand(BATCH, 3, side, side) * 255, captions=["a red square"] * BATCH)
    assert set(feats) >= set(LEVELS)
    for level, spec in shapes.items():
        assert feats[level].shape == (BATCH, spec.channels, side // spec.stride, side // spec.stride), level
        assert torch.isfinite(feats[level]).all(), level


def test_frozen_parts_stay_frozen_in_eval_and_gradients_reach_the_adapters(backbone):
    marked = [m for m in backbone.modules() if frozen.is_frozen(m)]
    assert marked, "a backbone marks its frozen weights with models.frozen.freeze"
    backbone.train()
    assert backbone.training
    for part in marked:
        assert not any(m.training for m in part.modules()), type(part).__name__
        assert not any(p.requires_grad for p in part.parameters()), type(part).__name__
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    assert trainable, "only the backbone's own adapters train, and it has some"
    side = -(-SIDE // backbone.size_divisibility) * backbone.size_divisibility
    backbone.zero_grad(set_to_none=True)
    feats = backbone(torch.rand(BATCH, 3, side, side) * 255, captions=["a red square"] * BATCH)
    sum(feats[level].float().mean() for level in LEVELS).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    backbone.zero_grad(set_to_none=True)
    backbone.eval()


def test_no_frozen_pretrained_weight_in_the_state_dict(backbone):
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    with frozen_parts_as_pretrained(backbone):
        kept = frozen.strip_pretrained_frozen(backbone.state_dict(), backbone)
    params = dict(backbone.named_parameters(remove_duplicate=False))
    frozen_kept = [k for k in kept if k in params and not params[k].requires_grad]
    assert not frozen_kept, frozen_kept[:5]
    assert trainable <= set(kept), sorted(trainable - set(kept))[:5]  # the adapters are saved
