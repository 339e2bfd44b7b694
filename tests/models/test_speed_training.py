"""The training-side ``model.speed`` switches on a tiny Mask2Former (CPU), against the default float32 path.

* ``no_host_syncs`` on the pixel decoder: the encoder layers' per-layer finite check is replaced by an
  unconditional clamp; the outputs must be **bit-identical** (the clamp bound rounds to the largest
  float, so finite values pass unchanged) and the check's scalar reads gone.
* ``compile_decoder``: regional ``torch.compile`` (inductor) of the masked-attention decoder layers;
  inductor fuses and reorders float32 arithmetic: mask logits and embeddings within 1e-4 relative L2
  (the bound the UNet's regional compilation keeps, :mod:`odise_pl.models.speed`).
* every switch is wired by :func:`apply_speed_options` and undone by ``remove()``.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from odise_pl.config.schema import MaskGeneratorConfig
from odise_pl.models.backbones.base import LEVELS, ShapeSpec
from odise_pl.models.host_syncs import HostSyncCounter
from odise_pl.models.mask_generator.criterion import SetCriterion
from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator
from odise_pl.models.speed import SpeedOptions, apply_speed_options

TINY = MaskGeneratorConfig(
    num_queries=8,
    hidden_dim=32,
    mask_dim=32,
    dec_layers=2,
    nheads=2,
    dim_feedforward=64,
    enc_layers=2,
    enc_feedforward_dim=64,
    embed_dim=16,
    train_num_points=64,
)


class Holder(nn.Module):
    """The parts of an OdiseModule that the training switches touch."""

    fused_optimizer = False

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        shape = {k: ShapeSpec(24, s) for k, s in zip(LEVELS, (4, 8, 16, 32))}
        self.mask_generator = Mask2FormerMaskGenerator.from_config(TINY, shape)
        self.criterion = SetCriterion(self.mask_generator.config, num_classes=3)


def _features():
    gen = torch.Generator().manual_seed(1)
    return {k: torch.randn(2, 24, 64 // s, 64 // s, generator=gen) for k, s in zip(LEVELS, (4, 8, 16, 32))}


def _outputs(generator: nn.Module) -> list[torch.Tensor]:
    out = generator(_features())
    return [*out["pred_masks"], *out["mask_embeds"], out["mask_features"]]


def test_no_host_syncs_in_the_pixel_decoder_bit_identical():
    model = Holder().train()
    with HostSyncCounter() as before:
        ref = _outputs(model.mask_generator)
    handle = apply_speed_options(model, SpeedOptions(no_host_syncs=True))
    try:
        assert handle.report["encoder_layers_without_sync"] == TINY.enc_layers
        assert model.criterion.no_host_syncs
        with HostSyncCounter() as after:
            got = _outputs(model.mask_generator)
    finally:
        handle.remove()
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    assert before.counts["item"] - after.counts["item"] == TINY.enc_layers, (before.counts, after.counts)
    assert not model.criterion.no_host_syncs
    assert all("forward" not in vars(m) for m in model.mask_generator.modules())


def test_clamp_without_check_keeps_the_infinity_clamp():
    from odise_pl.models.speed import clamp_without_check

    class Layer(nn.Module):
        def forward(self, x):
            return (x if self.training else x * 1,)

    layer = Layer().train()
    wrapped = clamp_without_check(layer.forward, layer)
    x = torch.tensor([1.0, float("inf"), -float("inf"), float("nan"), 3.4e38])
    out = wrapped(x)[0]
    big = torch.finfo(torch.float32).max
    assert out[0] == 1.0 and out[1] == big and out[2] == -big and torch.isnan(out[3]) and out[4] == x[4]
    assert layer.training


def test_training_switches_are_wired_and_removed():
    model = Holder()
    opts = SpeedOptions(fused_optimizer=True, batched_matching=True, compile_decoder=True)
    handle = apply_speed_options(model, opts)
    assert model.fused_optimizer and model.criterion.batched_matching
    assert handle.report["compiled_decoder_layers"] == len(model.mask_generator.transformer.decoder.layers)
    assert all("forward" in vars(layer) for layer in model.mask_generator.transformer.decoder.layers)
    handle.remove()
    assert not model.fused_optimizer and not model.criterion.batched_matching
    assert "fused_optimizer" not in vars(model)
    assert all("forward" not in vars(layer) for layer in model.mask_generator.transformer.decoder.layers)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None, reason="inductor needs a C++ compiler")
def test_compiled_decoder_layers_within_tolerance():
    model = Holder().eval()
    with torch.no_grad():
        ref = _outputs(model.mask_generator)
    handle = apply_speed_options(model, SpeedOptions(compile_decoder=True))
    try:
        with torch.no_grad():
            got = _outputs(model.mask_generator)
    finally:
        handle.remove()
    errors = [float((b - a).norm() / a.norm()) for a, b in zip(ref, got)]
    print("compile_decoder relative errors:", errors)
    assert max(errors) <= 1e-4, errors
