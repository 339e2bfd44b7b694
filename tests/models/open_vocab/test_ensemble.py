"""The geometric ensemble, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from odise_pl.models.open_vocab.ensemble import GeometricEnsemble, geometric_ensemble, seen_class_mask
from odise_pl.vocab import load_builtin, parse_vocabulary

# Diffusion classifier: softmax over K+1 = [0.6, 0.2 | void 0.2]; over the K classes alone [0.75, 0.25].
DIFF = torch.tensor([[[math.log(0.6), math.log(0.2), math.log(0.2)]]])
CLIP = torch.tensor([[[0.0, 0.0]]])  # q = [0.5, 0.5]
SEEN = torch.tensor([True, False])


def test_hand_computed_ensemble():
    # seen class 0:   0.75^0.7 * 0.5^0.3 = 0.817578 * 0.812252 = 0.664082
    # unseen class 1: 0.25^0.3 * 0.5^0.7 = 0.659754 * 0.615572 = 0.406126
    # renormalised: [0.620523, 0.379477]; times (1 - 0.2); void 0.2 appended
    probs = geometric_ensemble(DIFF, CLIP, SEEN, alpha=0.3, beta=0.7)
    torch.testing.assert_close(probs, torch.tensor([[[0.496419, 0.303581, 0.2]]]), atol=1e-5, rtol=0)


def test_hand_computed_void_in_class_softmax():
    # p taken from the K+1 softmax: 0.6^0.7 * 0.5^0.3 = 0.569823; 0.2^0.3 * 0.5^0.7 = 0.380996
    # renormalised [0.599290, 0.400710] * 0.8
    probs = geometric_ensemble(DIFF, CLIP, SEEN, alpha=0.3, beta=0.7, void_in_class_softmax=True)
    torch.testing.assert_close(probs, torch.tensor([[[0.479433, 0.320567, 0.2]]]), atol=1e-5, rtol=0)


def test_modes():
    torch.testing.assert_close(geometric_ensemble(DIFF, None, None, mode="diffusion"), torch.tensor([[[0.6, 0.2, 0.2]]]))
    torch.testing.assert_close(geometric_ensemble(DIFF, CLIP, None, mode="clip"), torch.tensor([[[0.4, 0.4, 0.2]]]))
    with pytest.raises(ValueError, match="unknown classifier mode"):
        geometric_ensemble(DIFF, CLIP, SEEN, mode="mean")
    with pytest.raises(ValueError, match="needs CLIP logits"):
        geometric_ensemble(DIFF, None, SEEN, mode="ensemble")
    with pytest.raises(ValueError, match="seen-class mask"):
        geometric_ensemble(DIFF, CLIP, None, mode="ensemble")


def test_limits_and_normalisation():
    g = torch.Generator().manual_seed(0)
    diff, clip = torch.randn(2, 5, 8, generator=g) * 3, torch.randn(2, 5, 7, generator=g) * 3
    seen = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    probs = geometric_ensemble(diff, clip, seen, alpha=0.35, beta=0.65)
    assert probs.shape == (2, 5, 8)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(probs[..., -1], diff.softmax(-1)[..., -1])  # void untouched
    torch.testing.assert_close(
        geometric_ensemble(diff, clip, seen, alpha=0.0, beta=0.0), geometric_ensemble(diff, clip, seen, mode="diffusion")
    )
    torch.testing.assert_close(geometric_ensemble(diff, clip, seen, alpha=1.0, beta=1.0), geometric_ensemble(diff, clip, seen, mode="clip"))
    # extreme logits: finite, no NaN from log(0)
    assert torch.isfinite(geometric_ensemble(diff * 1e3, clip * 1e3, seen)).all()


def test_module_form():
    ens = GeometricEnsemble(mode="ensemble", alpha=0.3, beta=0.7)
    ens.set_seen(seen_class_mask([["a"], ["b"]], [["a"]]))
    torch.testing.assert_close(ens(DIFF, CLIP), geometric_ensemble(DIFF, CLIP, SEEN))
    assert GeometricEnsemble(mode="diffusion").needs_clip is False
    with pytest.raises(ValueError, match="alpha"):
        GeometricEnsemble(alpha=1.5)


def test_seen_mask_uses_every_synonym():
    test = parse_vocabulary("cat,Kitty;dog;grass_field,lawn;tree")
    split = seen_class_mask(test, [["kitty"], ["Lawn", "turf"], ["car"]])
    assert split.mask.tolist() == [True, False, True, False]
    assert (split.num_seen, split.num_unseen) == (2, 2)
    assert seen_class_mask([["cat"]], ["dog", "cat"]).mask.tolist() == [True]  # plain train names


def test_seen_mask_of_benchmarks():
    coco = load_builtin("coco_panoptic_with_prompt_eng")
    assert seen_class_mask(coco, coco).num_unseen == 0
    ade = seen_class_mask(load_builtin("ade20k_150_with_prompt_eng"), coco)
    assert 0 < ade.num_seen < 150 and ade.num_seen + ade.num_unseen == 150
    names = load_builtin("ade20k_150_with_prompt_eng").names
    assert ade.mask[names.index("person")] and not ade.mask[names.index("escalator")]
