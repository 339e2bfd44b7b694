"""The backbone contract shared by every feature extractor.

A backbone is an ``nn.Module`` whose ``forward(images, captions=None)`` takes
``images`` (B, 3, H, W) float pixels in [0, 255], RGB, H and W multiples of
``size_divisibility``, and returns ``{"s2": (B, C2, H/4, W/4), "s3": .../8,
"s4": .../16, "s5": .../32}`` (a ConvNeXt ``clip`` backbone adds ``"clip_dense"``, the CLIP trunk's
stride-32 map, for FC-CLIP's out-of-vocabulary head).  It normalises its own input.  Its frozen
weights are marked with :func:`odise_pl.models.frozen.freeze`; only its own
adapters (projections, captioner) train.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

LEVELS = ("s2", "s3", "s4", "s5")
STRIDES = {"s2": 4, "s3": 8, "s4": 16, "s5": 32}


@dataclass(frozen=True)
class ShapeSpec:
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: subclasses set ``size_divisibility`` and implement ``forward``/``output_shape``."""

    #: input sides must be multiples of this (the collate pads to it)
    size_divisibility: int = 32

    def output_shape(self) -> dict[str, ShapeSpec]:
        raise NotImplementedError

    def frozen_parts(self) -> dict[str, nn.Module]:
        """The frozen sub-modules by role (``model.speed.frozen_weights`` casts these); none by default."""
        return {}

    def frozen_entry_points(self) -> list[tuple[nn.Module, str]]:
        """``(module, method name)`` through which the frozen parts are called (``model.speed.frozen_autocast``
        runs these under bf16). By default every frozen part's ``forward``."""
        return [(part, "forward") for part in self.frozen_parts().values()]

    def train(self, mode: bool = True) -> Backbone:
        from odise_pl.models.frozen import keep_frozen_in_eval

        super().train(mode)
        keep_frozen_in_eval(self)
        return self
