"""FC-CLIP's parts as options of odise-pl's (issue 23): each checked against the property that defines it.

The numbers against the official code are in tests/reference/test_fcclip_parity.py; these are the
parts' own contracts, on tiny random-weight models.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odise_pl.errors import ConfigError
from odise_pl.models.backbones.clip import ClipBackbone
from odise_pl.models.mask_generator.mask2former import PooledMaskEmbed
from odise_pl.models.open_vocab.dense_pooling import DenseMaskClassifier, mask_average_pool
from odise_pl.models.open_vocab.ensemble import geometric_ensemble
from odise_pl.models.open_vocab.text_bank import VILD_TEMPLATES
from odise_pl.models.supervision.base import TextEmbeddings
from odise_pl.models.supervision.fcclip_label import FcclipLabelSupervision


def test_no_adapter_reports_the_trunk_widths_and_shares_the_dense_map(tiny_clip):
    backbone = ClipBackbone(clip=tiny_clip, adapter="none")
    widths = [info["num_chs"] for info in tiny_clip.model.visual.trunk.feature_info][-4:]
    assert [s.channels for s in backbone.output_shape().values()] == widths
    assert not list(backbone.parameters(recurse=False)) and backbone.adapter is None
    assert not any(p.requires_grad for p in backbone.parameters())  # nothing trainable in the backbone
    feats = backbone(torch.rand(1, 3, 64, 96) * 255)
    assert [tuple(feats[k].shape[1:]) for k in ("s2", "s5")] == [(widths[0], 16, 24), (widths[3], 2, 3)]
    assert torch.equal(feats["clip_dense"], feats["s5"])  # norm_pre is Identity for a ConvNeXt CLIP
    default = ClipBackbone(clip=tiny_clip)  # ODISE's zoo: the adapter stays the default
    assert {s.channels for s in default.output_shape().values()} == {256} and default.padding == "black"


def test_mean_padding_is_zero_after_normalising(tiny_clip):
    image = torch.rand(1, 3, 64, 64) * 255
    padded = torch.zeros(1, 3, 64, 96)
    padded[..., :64] = image
    mean = ClipBackbone(clip=tiny_clip, adapter="none", padding="mean")
    pixels = mean.normalize(padded, torch.tensor([[64, 64]]))
    assert torch.equal(pixels[..., 64:], torch.zeros_like(pixels[..., 64:]))
    assert torch.equal(pixels[..., :64], tiny_clip.normalize(image))
    black = ClipBackbone(clip=tiny_clip, adapter="none").normalize(padded, torch.tensor([[64, 64]]))
    assert (black[..., 64:] != 0).all()  # ODISE: black normalised, i.e. not the mean colour


def test_a_vit_clip_has_no_adapter_free_mode(tiny_vit_clip):
    with pytest.raises(ConfigError, match="ConvNeXt"):
        ClipBackbone(clip=tiny_vit_clip, adapter="none")


def test_class_head_without_the_norm_before_its_mlp():
    head = PooledMaskEmbed(16, 16, 24, pre_mlp_norm=False)
    assert sorted(k for k in head.state_dict() if k.startswith("mask_embed.")) == [
        f"mask_embed.layers.{i}.{p}" for i in range(3) for p in ("bias", "weight")
    ]
    q, masks, feats = torch.randn(2, 5, 16), torch.randn(2, 5, 8, 8), torch.randn(2, 16, 8, 8)
    x = head.pool_proj(mask_average_pool(feats, masks)) + q  # FC-CLIP: MLP(Linear(LN(pooled)) + q)
    assert torch.allclose(head(q, masks, feats), head.mask_embed(x), atol=1e-6)
    odise = PooledMaskEmbed(16, 16, 24)
    assert isinstance(odise.mask_embed[0], nn.LayerNorm)


def _text(k: int = 3, width: int = 8) -> TextEmbeddings:
    embeds = nn.functional.normalize(torch.randn(2 * k, width), dim=-1)
    return TextEmbeddings(embeds, torch.arange(k).repeat_interleave(2), k)


def test_fcclip_label_classifies_in_clip_space_with_a_learnable_void():
    text = _text()
    sup = FcclipLabelSupervision(train_text=text, embed_dim=8, train_names=[["a"], ["b"], ["c"]])
    assert isinstance(sup.void_embedding, nn.Embedding) and sup.void_embedding.weight.shape == (1, 8)
    assert sup.logit_scale.item() == pytest.approx(2.6593, abs=1e-4)  # log(1/0.07)
    assert not any("proj" in name for name, _ in sup.named_parameters())  # no text projection
    z = torch.randn(1, 4, 8)
    logits = sup.classify(z, text)
    cos = nn.functional.normalize(z, dim=-1) @ text.embeds.t()
    want = torch.cat([cos.view(1, 4, 3, 2).amax(-1), nn.functional.normalize(z, dim=-1) @ sup.void_vector()[:, None]], -1) * (1 / 0.07)
    assert torch.allclose(logits, want, atol=1e-5)
    with pytest.raises(ConfigError, match="embed_dim"):
        FcclipLabelSupervision(train_text=text, embed_dim=16, train_names=[["a"], ["b"], ["c"]])
    assert len(VILD_TEMPLATES) == 14 and all(t.count("{}") == 1 for t in VILD_TEMPLATES)


def test_dense_pooling_of_a_whole_image_mask_is_clips_image_embedding():
    from odise_pl.models.clip_model import ClipSpec, load_clip

    clip = load_clip(ClipSpec("fcclip-tiny-convnext_large", None))
    backbone = ClipBackbone(clip=clip, adapter="none", padding="mean")
    image = torch.rand(1, 3, 96, 128) * 255
    dense = backbone(image)["clip_dense"]
    masks = torch.full((1, 2, 24, 32), -1.0)
    masks[:, 0] = 1.0  # query 0: the whole image; query 1: empty
    embeds, valid = DenseMaskClassifier(clip)(dense, masks)
    with torch.no_grad():
        whole = clip.model.encode_image(clip.normalize(image))
    assert torch.allclose(embeds[0, 0], whole[0], atol=1e-5)
    assert valid.tolist() == [[True, False]] and torch.isfinite(embeds[0, 1]).all()  # empty: zeros pooled


def test_ensemble_on_valid_mask_keeps_the_in_vocabulary_probabilities():
    logits, clip = torch.randn(1, 2, 4), torch.randn(1, 2, 3)
    seen = torch.tensor([True, False, True])
    valid = torch.tensor([[True, False]])
    fused = geometric_ensemble(logits, clip, seen, alpha=0.4, beta=0.8, valid=valid)
    plain = geometric_ensemble(logits, clip, seen, alpha=0.4, beta=0.8)
    p = logits[..., :-1].softmax(-1) * logits.softmax(-1)[..., :-1].sum(-1, keepdim=True)
    assert torch.allclose(fused[0, 1, :-1], p[0, 1], atol=1e-6)  # invalid query: CLIP's weight 0
    assert torch.allclose(fused[0, 0], plain[0, 0]) and not torch.allclose(fused[0, 1], plain[0, 1])


def test_the_fixture_recipe_shares_one_14_template_classifier():
    from pathlib import Path

    from odise_pl.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[3] / "experiments" / "reference" / "fcclip_fixture.yaml"), [])
    assert list(cfg.model.inference.clip_prompt_templates) == list(VILD_TEMPLATES)
    assert list(cfg.model.supervision.get("prompt_templates", VILD_TEMPLATES)) == list(VILD_TEMPLATES)
    assert (cfg.model.backbone.adapter, cfg.model.backbone.padding, cfg.model.inference.clip_features) == ("none", "mean", "backbone")
