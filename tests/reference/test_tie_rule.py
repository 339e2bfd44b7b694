"""The tie rule of odise_pl.reference.discrete on small hand-made decisions (no model).

Each case has a twin that must fail: a flip whose margin is beyond what the measured error can move.
"""

from __future__ import annotations

import torch

from odise_pl.reference.discrete import (
    argmax_check,
    instances_check,
    panoptic_check,
    panoptic_uncertain,
    threshold_check,
)


def test_argmax_flip_is_excused_only_within_twice_the_measured_error():
    scores = torch.tensor([[[0.0489414, 0.9]], [[0.0489366, 0.1]]])  # (C=2, H=1, W=2): the near-tie
    ref = torch.tensor([[1, 0]])  # the reference picked the runner-up at (0, 0)
    ok = argmax_check("sem", scores, ref, err=2.5e-6)  # margin 4.8e-6 <= 2 x 2.5e-6
    assert ok.ok and "(0, 0, 0)" not in ok.detail and "margin 4.8e-06" in ok.detail
    assert not argmax_check("sem", scores, ref, err=2.0e-6).ok  # 4.8e-6 > 4e-6
    far = torch.tensor([[0, 1]])  # (0, 1): margin 0.8, far from any tie
    bad = argmax_check("sem", scores, far, err=2.5e-6)
    assert not bad.ok and "margin 8.0e-01" in bad.detail


def test_threshold_flip_is_excused_only_within_the_measured_error():
    values = torch.tensor([0.5 + 7e-6, 0.9])
    assert threshold_check("fg", values, torch.tensor([False, True]), 0.5, err=1e-5).ok
    assert not threshold_check("fg", values, torch.tensor([False, True]), 0.5, err=5e-6).ok
    assert not threshold_check("fg", values, torch.tensor([True, False]), 0.5, err=1e-5).ok


def _instances(n_same: int, flip: bool):
    masks = torch.zeros(n_same + 1, 4, 4, dtype=torch.bool)
    masks[:n_same, :2] = True
    masks[n_same, 2:] = True
    probs = masks.float() * 0.9 + 0.05
    ours = {
        "scores": torch.linspace(0.5, 0.3, n_same + 1),
        "classes": torch.arange(n_same + 1),
        "masks": masks.clone(),
        "mask_probs": probs,
        "pair_probs": torch.linspace(0.5, 0.3, n_same + 1),
    }
    ref_masks = masks.clone()
    if flip:
        ours["mask_probs"][:n_same, 1, 3] = 0.5 - 1e-6  # every shared mask at a 0.5 tie there
        ref_masks[:n_same, 1, 3] = False
        ours["masks"][:n_same, 1, 3] = True
    return ours, {"scores": ours["scores"].clone(), "classes": ours["classes"].clone(), "masks": ref_masks}


def test_instances_sharing_one_mask_are_matched_as_an_assignment():
    ours, ref = _instances(7, flip=True)  # seven instances share a mask that differs at one tie pixel
    check = instances_check("inst", ours, ref, err_prob=1e-6, err_mask=1e-5)
    assert check.ok, check.detail
    assert "margin 1.0e-06" in check.detail
    ours["mask_probs"][:7, 1, 3] = 0.9  # the same flip, far from 0.5
    assert not instances_check("inst", ours, ref, err_prob=1e-6, err_mask=1e-5).ok


def test_a_missing_instance_is_excused_only_at_the_top_k_boundary():
    ours, ref = _instances(2, flip=False)
    fewer = {k: v[:2] for k, v in ours.items()}
    assert not instances_check("inst", fewer, ref, err_prob=1e-6, err_mask=1e-6).ok
    assert instances_check("inst", fewer, ref, err_prob=1e-6, err_mask=1e-6, boundary=(0.3, 1)).ok


def test_panoptic_pixel_at_an_owner_tie_is_excused_and_a_far_one_is_not():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])  # two kept queries, classes 0 and 1
    logits = torch.full((2, 2, 2), -4.0)
    logits[0, 0, 0] = logits[1, 0, 0] = 4.0  # (0, 0): an exact owner tie
    logits[0, 1, 1] = 4.0  # (1, 1): query 0 alone
    unsure = panoptic_uncertain(probs, logits, object_mask_threshold=0.0, overlap_threshold=0.0, err_prob=1e-6, err_mask=1e-6)
    assert bool(unsure[0][0, 0]) and not bool(unsure[0][1, 1])
    ours = (torch.tensor([[1, 0], [0, 1]]), [{"id": 1, "category_id": 0, "isthing": True}])
    segs = [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 1, "isthing": True}]
    tie = (torch.tensor([[2, 0], [0, 1]]), segs)
    assert panoptic_check("pan", ours, tie, unsure).ok
    far = (torch.tensor([[1, 0], [0, 2]]), segs)
    check = panoptic_check("pan", ours, far, unsure)
    assert not check.ok and "far from any tie" in check.detail
