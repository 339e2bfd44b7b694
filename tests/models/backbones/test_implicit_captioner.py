"""The implicit captioner on the tiny shared CLIP, and the parameter accounting helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odise_pl.models.backbones.implicit_captioner import ImplicitCaptioner, PositionalLinear
from odise_pl.models.clip_model import ClipSpec, load_clip
from odise_pl.models.param_summary import count_parameters, format_summary


@pytest.fixture(scope="module")
def clip():
    return load_clip(ClipSpec("odise-tiny-vit", None))


def test_positional_linear_shapes():
    layer = PositionalLinear(8, 12, seq_len=77)
    assert layer(torch.randn(3, 8)).shape == (3, 77, 12)
    assert layer.positional_embedding.shape == (1, 77, 12)


def test_zero_gates_give_the_empty_caption_exactly(clip):
    captioner = ImplicitCaptioner(clip=clip, text_shape=(77, 24), time_embed_dim=40)
    assert captioner.clip is clip
    assert not any(p is q for p in captioner.parameters() for q in clip.parameters())  # never its own copy
    assert torch.count_nonzero(captioner.alpha_cond) == 0 and captioner.alpha_cond.shape == (1, 77, 24)
    assert torch.count_nonzero(captioner.alpha_cond_time_embed) == 0
    empty = torch.randn(1, 77, 24)
    images = torch.rand(2, 3, 96, 128) * 255
    cond, time_term = captioner(images, empty)
    assert cond.shape == (2, 77, 24) and time_term.shape == (2, 40)
    assert torch.equal(cond, empty.expand(2, -1, -1)) and torch.count_nonzero(time_term) == 0
    with torch.no_grad():
        captioner.alpha_cond.fill_(1.0)
    assert not torch.equal(captioner(images, empty)[0], empty.expand(2, -1, -1))


def test_image_embedding_is_unnormalised_clip_of_the_center_crop(clip):
    captioner = ImplicitCaptioner(clip=clip, text_shape=(77, 16), time_embed_dim=None)
    size = clip.image_size
    square = torch.rand(2, 3, size, size) * 255
    wide = torch.cat([torch.zeros(2, 3, size, size // 2), square, torch.zeros(2, 3, size, size // 2)], dim=-1)
    with torch.no_grad():
        expected = clip.model.encode_image(clip.normalize(square))
    torch.testing.assert_close(captioner.image_embedding(square), expected)
    torch.testing.assert_close(captioner.image_embedding(wide), expected)  # short side = size: center crop
    assert captioner.image_embedding(square).shape == (2, clip.embed_dim)
    assert not torch.allclose(expected.norm(dim=-1), torch.ones(2))


def test_gradients_reach_the_gate_but_not_clip(clip):
    captioner = ImplicitCaptioner(clip=clip, text_shape=(77, 16), time_embed_dim=8)
    cond, time_term = captioner(torch.rand(1, 3, 64, 64) * 255, torch.zeros(1, 77, 16))
    (cond.sum() + time_term.sum()).backward()
    assert captioner.alpha_cond.grad.abs().sum() > 0
    assert captioner.alpha_cond_time_embed.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())


def test_count_parameters_expands_mixed_parts_and_counts_shared_once():
    frozen = nn.Linear(4, 4).requires_grad_(False)
    model = nn.ModuleDict(
        {
            "backbone": nn.ModuleDict({"frozen": frozen, "adapter": nn.Linear(4, 2)}),
            "head": nn.Linear(2, 3),
            "again": frozen,  # the same module registered twice counts once
        }
    )
    rows = count_parameters(model)
    assert [(r.part, r.trainable, r.frozen) for r in rows] == [("backbone.frozen", 0, 20), ("backbone.adapter", 10, 0), ("head", 9, 0)]
    table = format_summary(rows)
    assert "backbone.adapter" in table and table.splitlines()[-1].split()[:3] == ["total", "19", "20"]
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 10).requires_grad_(False))
    assert [(r.trainable, r.frozen) for r in count_parameters(meta)] == [(1_001_000, 0), (0, 10_010)]
