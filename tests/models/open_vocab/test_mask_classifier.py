"""The CLIP mask classifier on the tiny ViT and ConvNeXt CLIPs.

Tolerance: a whole-image mask reproduces ``encode_image`` to rtol 1e-4 / atol 1e-5
(float32; the masked path runs the same operations with a different attention batching).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from odise_pl.models.open_vocab.mask_classifier import ClipMaskClassifier
from odise_pl.models.supervision.base import TextEmbeddings

TOL = dict(rtol=1e-4, atol=1e-5)


def _images(b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g).float()


def _masks(b=2, res=16):
    """(B,4,res,res) logits: whole image, top-left quarter, empty, right half."""
    m = torch.full((b, 4, res, res), -6.0)
    m[:, 0] = 6.0
    m[:, 1, : res // 2, : res // 2] = 6.0
    m[:, 3, :, res // 2 :] = 6.0
    return m


def _full_image_embedding(clip, images):
    return clip.model.encode_image(clip.normalize(images))


@pytest.mark.parametrize("mask_blocks", [None, 1, 2])
def test_vit_whole_image_mask_matches_encode_image(tiny_vit_clip, mask_blocks):
    clf = ClipMaskClassifier(tiny_vit_clip, mask_blocks=mask_blocks)
    images = _images()
    emb = clf(images, _masks())
    assert emb.shape == (2, 4, tiny_vit_clip.embed_dim)
    torch.testing.assert_close(emb[:, 0], _full_image_embedding(tiny_vit_clip, images), **TOL)
    assert (emb[:, 1] - emb[:, 0]).abs().max() > 1e-2  # a partial mask gives another embedding
    assert (emb[:, 1] - emb[:, 3]).abs().max() > 1e-2


def _reference_maskclip(clip, images, masks):
    """The reference formulation: Q mask tokens prepended, one joint pass with a (Q+L)x(Q+L) mask."""
    visual = clip.model.visual
    x = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False)
    x = visual.conv1(clip.normalize(x)).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.view(1, 1, -1).expand(x.shape[0], 1, -1), x], 1)
    x = visual.ln_pre(x + visual.positional_embedding)
    B, Q, L = x.shape[0], masks.shape[1], x.shape[1]
    logits = F.interpolate(masks, size=(64, 64), mode="bilinear", align_corners=False)
    blocked = F.max_pool2d(logits.sigmoid(), kernel_size=8, stride=8).flatten(2) < 0.5  # (B,Q,P)
    attn = torch.zeros(B, Q + L, Q + L)
    attn[:, :, :Q] = float("-inf")  # nobody attends to the mask tokens
    attn[:, :Q, Q + 1 :] = attn[:, :Q, Q + 1 :].masked_fill(blocked, float("-inf"))
    heads = visual.transformer.resblocks[0].attn.num_heads
    attn = attn.repeat_interleave(heads, dim=0)
    tokens = torch.cat([x[:, :1].expand(B, Q, -1), x], dim=1)
    for blk in visual.transformer.resblocks:
        tokens = blk(tokens, attn_mask=attn)
    return visual.ln_post(tokens[:, :Q]) @ visual.proj


def test_vit_matches_reference_joint_pass(tiny_vit_clip):
    images, masks = _images(seed=1), _masks()
    masks[:, 2, 3:9, 5:14] = 6.0  # an irregular mask instead of the empty one
    ours = ClipMaskClassifier(tiny_vit_clip)(images, masks)
    torch.testing.assert_close(ours, _reference_maskclip(tiny_vit_clip, images, masks), **TOL)


def test_vit_empty_mask_attends_to_cls_only(tiny_vit_clip):
    clf = ClipMaskClassifier(tiny_vit_clip)
    images = _images()
    masks = torch.full((2, 3, 16, 16), -6.0)  # three empty masks
    emb = clf(images, masks)
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb[:, 0], emb[:, 2])
    assert not torch.allclose(emb[:, 0], _full_image_embedding(tiny_vit_clip, images), atol=1e-3)


def test_convnext_whole_mask_and_empty_mask(tiny_clip):
    clf = ClipMaskClassifier(tiny_clip)
    images = _images()
    emb = clf(images, _masks())
    full = _full_image_embedding(tiny_clip, images)
    assert emb.shape == (2, 4, tiny_clip.embed_dim) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb[:, 0], full, **TOL)
    torch.testing.assert_close(emb[:, 2], full, **TOL)  # empty mask -> global embedding
    assert (emb[:, 1] - full).abs().max() > 1e-2


def test_convnext_pools_the_dense_map(tiny_clip):
    """A quarter mask equals the head applied to that feature cell (the tiny trunk has a 2x2 map)."""
    visual = tiny_clip.model.visual
    images = _images(seed=2)
    emb = ClipMaskClassifier(tiny_clip)(images, _masks())
    feats = visual.trunk.forward_features(tiny_clip.normalize(images))  # (B,C,2,2)
    cell = visual.head(visual.trunk.forward_head(feats[:, :, :1, :1]))
    torch.testing.assert_close(emb[:, 1], cell, **TOL)


def test_padding_is_cropped(tiny_vit_clip):
    """``alignment="cropped"`` (the corrected variant): image and masks both lose the padding."""
    clf = ClipMaskClassifier(tiny_vit_clip, alignment="cropped")
    images, masks = _images(b=1, size=48), _masks(b=1, res=12)
    padded = torch.full((1, 3, 64, 80), 255.0)
    padded[..., :48, :48] = images
    padded_masks = torch.full((1, 4, 16, 20), 6.0)  # garbage in the padding
    padded_masks[..., :12, :12] = masks
    got = clf(padded, padded_masks, image_sizes=torch.tensor([[48, 48]]))
    torch.testing.assert_close(got, clf(images, masks), **TOL)


def test_reference_alignment_crops_the_image_but_not_the_masks(tiny_vit_clip):
    """The reference (default): the unpadded image, but masks of the whole padded grid (stretched onto it)."""
    clf = ClipMaskClassifier(tiny_vit_clip)
    assert clf.alignment == "reference"
    images, masks = _images(b=1, size=48), _masks(b=1, res=12)
    padded = torch.full((1, 3, 64, 80), 255.0)
    padded[..., :48, :48] = images
    padded_masks = torch.full((1, 4, 16, 20), 6.0)
    padded_masks[..., :12, :12] = masks
    got = clf(padded, padded_masks, image_sizes=torch.tensor([[48, 48]]))
    torch.testing.assert_close(got, clf(images, padded_masks), **TOL)  # = the unpadded image with those masks
    assert (got - clf(images, masks)).abs().max() > 1e-3  # not the aligned result
    with pytest.raises(ValueError, match="clip_mask_alignment"):
        ClipMaskClassifier(tiny_vit_clip, alignment="shifted")


def test_bool_masks_and_other_input_size(tiny_vit_clip):
    clf = ClipMaskClassifier(tiny_vit_clip, image_size=96)  # 12x12 grid: positional embedding interpolated
    masks = _masks() > 0
    emb = clf(_images(), masks)
    assert emb.shape == (2, 4, tiny_vit_clip.embed_dim) and torch.isfinite(emb).all()
    base = ClipMaskClassifier(tiny_vit_clip)
    torch.testing.assert_close(base(_images(), masks), base(_images(), _masks()), **TOL)


def test_logits_take_max_over_synonyms(tiny_vit_clip):
    clf = ClipMaskClassifier(tiny_vit_clip)
    g = torch.Generator().manual_seed(3)
    mask_embeds = torch.randn(2, 5, tiny_vit_clip.embed_dim, generator=g)
    names = torch.randn(4, tiny_vit_clip.embed_dim, generator=g)
    text = TextEmbeddings(names, torch.tensor([0, 0, 1, 1]), 2)
    logits = clf.logits(mask_embeds, text)
    cos = F.normalize(mask_embeds, dim=-1) @ F.normalize(names, dim=-1).t()
    scale = min(tiny_vit_clip.model.logit_scale.exp().item(), 100.0)
    expected = torch.stack([cos[..., :2].amax(-1), cos[..., 2:].amax(-1)], -1) * scale
    torch.testing.assert_close(logits, expected)
    with pytest.raises(ValueError, match="width"):
        clf.logits(mask_embeds[..., :8], text)


def test_rejects_bad_mask_blocks(tiny_vit_clip):
    with pytest.raises(ValueError, match="mask_blocks"):
        ClipMaskClassifier(tiny_vit_clip, mask_blocks=3)
