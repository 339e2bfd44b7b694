"""``model.speed`` finds the frozen parts through the backbone's ``frozen_parts()``, whatever their names."""

from __future__ import annotations

import torch
from torch import nn

from odise_pl.models.backbones.base import Backbone
from odise_pl.models.frozen import freeze
from odise_pl.models.speed import SpeedOptions, apply_speed_options, frozen_parts


class RenamedBackbone(Backbone):
    """A frozen trunk and a trainable head under names speed.py has never heard of."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk_of_another_name = freeze(nn.Linear(8, 8), pretrained=False)
        self.head = nn.Linear(8, 8)

    def frozen_parts(self) -> dict[str, nn.Module]:
        return {"trunk": self.trunk_of_another_name}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk_of_another_name(x)
        return {"s2": self.head(features.float()), "trunk": features}


def test_renamed_frozen_part_is_cast_and_restored_exactly():
    torch.manual_seed(0)
    backbone = RenamedBackbone()
    before = backbone.trunk_of_another_name.weight.detach().clone()
    handle = apply_speed_options(backbone, SpeedOptions(frozen_autocast=True, frozen_weights=True))
    try:
        assert backbone.trunk_of_another_name.weight.dtype == torch.bfloat16
        assert backbone.head.weight.dtype == torch.float32  # the trainable part is left alone
        out = backbone(torch.randn(2, 8))
        assert out["trunk"].dtype == torch.bfloat16  # ran under autocast (its forward)
        assert out["s2"].dtype == torch.float32
    finally:
        handle.remove()
    assert backbone.trunk_of_another_name.weight.dtype == torch.float32
    assert torch.equal(backbone.trunk_of_another_name.weight, before)
    assert "forward" not in vars(backbone.trunk_of_another_name)  # the autocast wrapper is gone


def test_backbone_without_frozen_parts_is_untouched():
    class Plain(Backbone):
        def __init__(self) -> None:
            super().__init__()
            self.vae = nn.Linear(2, 2)  # a name the old lookup would have cast: now only frozen_parts() counts

    plain = Plain()
    assert frozen_parts(plain) == {}
    handle = apply_speed_options(plain, SpeedOptions(frozen_autocast=True, frozen_weights=True))
    assert plain.vae.weight.dtype == torch.float32
    handle.remove()
