"""``model.speed.batched_matching`` / ``no_host_syncs``: the same assignments, one host copy per step.

Random predictions (3 supervised layers, 2 images, 8 queries) and targets (3 and 5 masks, one crowd).
The batched matching is compared with ``transformers``' matcher called layer by layer with the same
random state (the matcher draws its points in the same order): the indices must be identical. The host
syncs of a whole criterion call are counted with :class:`~odise_pl.models.host_syncs.HostSyncCounter`.
"""

from __future__ import annotations

import pytest
import torch

from odise_pl.config.schema import MaskGeneratorConfig
from odise_pl.models.host_syncs import HostSyncCounter
from odise_pl.models.mask_generator.criterion import SetCriterion
from odise_pl.models.mask_generator.mask2former import hf_config
from odise_pl.models.mask_generator.matching import batched_hungarian

LAYERS, BATCH, QUERIES, CLASSES, SIDE = 3, 2, 8, 4, 16


def _criterion() -> SetCriterion:
    cfg = MaskGeneratorConfig(dec_layers=LAYERS - 1, num_queries=QUERIES, train_num_points=64)
    return SetCriterion(hf_config(cfg, [4, 8, 16, 32]), num_classes=CLASSES)


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    masks = [torch.randn(BATCH, QUERIES, SIDE, SIDE, generator=gen) for _ in range(LAYERS)]
    logits = [torch.randn(BATCH, QUERIES, CLASSES + 1, generator=gen) for _ in range(LAYERS)]
    targets = []
    for n, crowd in ((3, []), (5, [2])):
        iscrowd = torch.zeros(n, dtype=torch.bool)
        iscrowd[crowd] = True
        targets.append(
            {
                "masks": torch.rand(n, 2 * SIDE, 2 * SIDE, generator=gen) > 0.5,
                "labels": torch.randint(0, CLASSES, (n,), generator=gen),
                "iscrowd": iscrowd,
            }
        )
    return masks, logits, targets


def test_batched_indices_equal_the_per_layer_matcher():
    criterion = _criterion()
    masks, logits, targets = _inputs()
    tm = [t["masks"][~t["iscrowd"]].float() for t in targets]
    tl = [t["labels"][~t["iscrowd"]] for t in targets]
    torch.manual_seed(7)
    per_layer = [criterion.loss.matcher(m, c, tm, tl) for m, c in zip(masks, logits)]
    torch.manual_seed(7)
    batched = batched_hungarian(criterion.loss.matcher, masks, logits, tm, tl)
    assert len(batched) == LAYERS and all(len(layer) == BATCH for layer in batched)
    for layer_ref, layer_got in zip(per_layer, batched):
        for (src, tgt), (src_b, tgt_b) in zip(layer_ref, layer_got):
            assert torch.equal(src, src_b) and torch.equal(tgt, tgt_b)
            assert src_b.dtype == torch.int64


def test_batched_matching_makes_one_host_copy():
    criterion = _criterion()
    masks, logits, targets = _inputs()
    tm = [t["masks"][~t["iscrowd"]].float() for t in targets]
    tl = [t["labels"][~t["iscrowd"]] for t in targets]
    with HostSyncCounter() as per_layer:
        for m, c in zip(masks, logits):
            criterion.loss.matcher(m, c, tm, tl)
    with HostSyncCounter() as batched:
        batched_hungarian(criterion.loss.matcher, masks, logits, tm, tl)
    assert per_layer.counts["cpu"] == LAYERS * BATCH
    assert batched.total == 1 and batched.counts["cpu"] == 1, batched.counts


@pytest.mark.parametrize("no_host_syncs", [False, True])
def test_criterion_host_syncs_and_loss_keys(no_host_syncs):
    """Default: a copy per layer and image plus a boolean indexing per image; switched on: one or two copies."""
    criterion = _criterion()
    masks, logits, targets = _inputs()
    with HostSyncCounter() as default:
        ref = criterion(masks, logits, targets)
    criterion.batched_matching, criterion.no_host_syncs = True, no_host_syncs
    with HostSyncCounter() as syncs:
        got = criterion(masks, logits, targets)
    assert list(got) == list(ref)  # the same terms, in the same order
    assert all(torch.isfinite(v) and v.requires_grad is False for v in got.values())
    assert default.total >= LAYERS * BATCH + BATCH, default.counts
    # the cost matrices' copy, plus (no_host_syncs) the crowd flags' copy instead of a boolean index per image
    expected = {"cpu": 2} if no_host_syncs else {"cpu": 1, "boolean_index": 2 * BATCH}
    assert dict(syncs.counts) == expected, syncs.counts


def test_batched_criterion_equals_the_default_losses_for_the_same_assignment(monkeypatch):
    """With the matching's randomness removed (points drawn once), both paths give the same losses."""
    criterion = _criterion()
    masks, logits, targets = _inputs()
    fixed = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(3))
    real_rand = torch.rand

    def rand(*size, **kwargs):  # the matcher's points (1, P, 2) fixed; the loss's own draws seeded
        if tuple(size) == (1, 64, 2):
            return fixed.clone()
        return real_rand(*size, **kwargs)

    monkeypatch.setattr(torch, "rand", rand)
    torch.manual_seed(5)
    ref = criterion(masks, logits, targets)
    criterion.batched_matching = criterion.no_host_syncs = True
    torch.manual_seed(5)
    got = criterion(masks, logits, targets)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-6, atol=1e-7, msg=key)
