"""OpenVocabHead: CLIP fusion at inference (modes, seen split, padding, no checkpoint keys)."""

from __future__ import annotations

import logging

import pytest
import torch

from odise_pl.models.open_vocab.ensemble import geometric_ensemble
from odise_pl.models.open_vocab.inference_head import OpenVocabHead

TRAIN = [["cat"], ["grass"], ["road"]]
VOCAB = [["cat", "kitten"], ["zebra"], ["grass"]]  # seen, unseen, seen


def _inputs(B=2, Q=5, K=3, H=64, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    masks = torch.randn(B, Q, H // 4, W // 4, generator=g) * 3
    logits = torch.randn(B, Q, K + 1, generator=g) * 2
    return images, masks, logits


def _head(clip, mode="ensemble", **kw):
    head = OpenVocabHead(clip, mode=mode, alpha=0.3, beta=0.7, train_names=TRAIN, **kw)
    head.set_vocabulary(VOCAB)
    return head


def test_diffusion_mode_is_the_plain_softmax(tiny_clip):
    head = _head(tiny_clip, mode="diffusion")
    images, masks, logits = _inputs()
    torch.testing.assert_close(head(images, masks, logits), logits.softmax(-1))


def test_ensemble_follows_the_geometric_formula(tiny_clip):
    head = _head(tiny_clip)
    assert head.split.mask.tolist() == [True, False, True]
    images, masks, logits = _inputs()
    probs = head(images, masks, logits)
    q = head.clip_logits(images, masks)
    assert q.shape == (2, 5, 3)
    expected = geometric_ensemble(logits, q, torch.tensor([True, False, True]), alpha=0.3, beta=0.7)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))
    assert not torch.allclose(probs, logits.softmax(-1), atol=1e-3)
    # probabilities instead of logits give the same result
    torch.testing.assert_close(head(images, masks, logits.softmax(-1), is_probs=True), probs, atol=1e-5, rtol=1e-4)


def test_clip_mode_keeps_the_void_probability(tiny_clip):
    head = _head(tiny_clip, mode="clip")
    images, masks, logits = _inputs()
    probs = head(images, masks, logits)
    torch.testing.assert_close(probs[..., -1], logits.softmax(-1)[..., -1])
    q = head.clip_logits(images, masks).softmax(-1)
    torch.testing.assert_close(probs[..., :-1] / probs[..., :-1].sum(-1, keepdim=True), q)


def test_seen_split_is_logged_and_follows_new_vocabularies(tiny_clip, caplog):
    head = OpenVocabHead(tiny_clip, mode="ensemble", train_names=TRAIN)
    with caplog.at_level(logging.INFO, logger="odise_pl"):
        split = head.set_vocabulary([["Road"], ["sky"], ["tree"], ["kitten", "cat"]])
    assert (split.num_seen, split.num_unseen) == (2, 2)
    assert head.ensemble.seen.tolist() == [True, False, False, True]
    assert "2 seen in training, 2 unseen" in caplog.text
    explicit = head.set_vocabulary([["a"], ["b"]], seen=torch.tensor([True, False]))
    assert explicit.mask.tolist() == [True, False] and head.num_classes == 2


def test_padding_is_cut_off_with_image_sizes(tiny_clip):
    head = _head(tiny_clip, alignment="cropped")  # the corrected variant; the reference's is the default
    images, masks, logits = _inputs(B=1, H=64, W=48)
    padded = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    padded[..., :48] = images
    padded_masks = torch.full((1, 5, 16, 16), -10.0)
    padded_masks[..., :12] = masks
    a = head(images, masks, logits)
    b = head(padded, padded_masks, logits, image_sizes=torch.tensor([[64, 48]]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_head_adds_no_checkpoint_keys_and_checks_sizes(tiny_clip):
    head = _head(tiny_clip)
    assert head.state_dict() == {}  # the shared CLIP stays out: one checkpoint serves every mode
    holder = torch.nn.Module()
    holder.open_vocab = head
    assert not any(k.startswith("open_vocab") for k in holder.state_dict())
    images, masks, logits = _inputs(K=4)
    with pytest.raises(ValueError, match="vocabulary has 3"):
        head(images, masks, logits)
    with pytest.raises(ValueError, match="unknown classifier mode"):
        OpenVocabHead(tiny_clip, mode="mixture")
    with pytest.raises(RuntimeError, match="set_vocabulary"):
        OpenVocabHead(tiny_clip).clip_logits(images, masks)
