"""PanopticQuality / pq_stats: hand-made cases, error paths, DDP-style reduction, and
parity with the COCO panoptic API on random maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odise_pl.errors import DatasetError
from odise_pl.metrics.panoptic_quality import PanopticQuality, pq_stats

from .synthetic_panoptic import (
    CATEGORIES,
    IS_THING,
    independent_prediction,
    perturb,
    random_panoptic,
    reference_pq,
    write_panoptic,
)


def seg(i, cat, crowd=0):
    return {"id": i, "category": cat, "iscrowd": crowd}


def stats_list(*args, num_classes=2):
    return [t.tolist() for t in pq_stats(*args, num_classes=num_classes)]


def test_void_pixels_leave_the_union():
    # GT segment 1: 10 pixels; the prediction covers them and 12 VOID pixels.
    gt = torch.zeros(4, 8, dtype=torch.long)
    gt[0, :8] = 1
    gt[1, :2] = 1
    pred = torch.zeros_like(gt)
    pred[:2, :] = 7
    pred[2, :6] = 7
    pred[3, :2] = 7  # 24 pixels: 10 on the segment, 14 on VOID
    iou, tp, fp, fn = stats_list(pred, [seg(7, 0)], gt, [seg(1, 0)])
    assert tp == [1, 0] and fp == [0, 0] and fn == [0, 0]
    assert iou[0] == pytest.approx(10 / (24 + 10 - 10 - 14))


def test_iou_of_exactly_one_half_is_not_a_match():
    gt = torch.tensor([[1, 1, 2, 2]])
    pred = torch.tensor([[5, 6, 6, 6]])  # pred 6 vs GT 2: inter 2, union 3 -> 0.67; pred 5 vs GT 1: 1/2
    iou, tp, fp, fn = stats_list(pred, [seg(5, 0), seg(6, 1)], gt, [seg(1, 0), seg(2, 1)])
    assert tp == [0, 1] and fn == [1, 0] and fp == [1, 0]
    assert iou == pytest.approx([0.0, 2 / 3])


def test_category_must_agree():
    ids = torch.tensor([[1, 1], [1, 1]])
    iou, tp, fp, fn = stats_list(ids, [seg(1, 1)], ids, [seg(1, 0)])
    assert tp == [0, 0] and fp == [0, 1] and fn == [1, 0]


def test_crowd_is_never_fn_and_absorbs_same_category_predictions():
    gt = torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3]])
    pred = torch.tensor([[8, 8, 8, 0], [9, 9, 9, 9]])
    segs = [seg(8, 0), seg(9, 1)]
    iou, tp, fp, fn = stats_list(pred, segs, gt, [seg(3, 0, crowd=1)])
    assert fn == [0, 0] and tp == [0, 0]
    assert fp == [0, 1]  # 8 lies on a crowd of its class; 9 is another class


def test_only_the_last_listed_crowd_of_a_category_absorbs(tmp_path):
    # The API keeps one crowd id per category (the last listed); reproduce it.
    gt = np.array([[1, 1, 1, 2, 2, 2]])
    pred = np.array([[5, 5, 5, 6, 6, 6]])
    gt_segs = [seg(1, 0, crowd=1), seg(2, 0, crowd=1)]
    pred_segs = [seg(5, 0), seg(6, 0)]
    iou, tp, fp, fn = stats_list(torch.from_numpy(pred), pred_segs, torch.from_numpy(gt), gt_segs)
    assert fp == [1, 0]  # 5 sits on the first crowd only
    gj, gf = write_panoptic(tmp_path, "gt", [(1, gt, gt_segs)])
    pj, pf = write_panoptic(tmp_path, "pred", [(1, pred, pred_segs)])
    ref = reference_pq(gj, gf, pj, pf)
    assert ref["stat"][CATEGORIES[0]["id"]] == (0.0, 0, 1, 0)


def test_listed_gt_segment_without_pixels_is_a_false_negative():
    ids = torch.tensor([[1, 1]])
    iou, tp, fp, fn = stats_list(ids, [seg(1, 0)], ids, [seg(1, 0), seg(2, 1), seg(4, 1, crowd=1)])
    assert tp == [1, 0] and fn == [0, 1]


@pytest.mark.parametrize("offset", [0, 3_000_000, 2**40])  # direct table, hash table, binary search
def test_id_lookup_paths_agree(offset):
    rng = np.random.default_rng(1)
    gt, gt_segs = random_panoptic(rng, 40, 50, large_ids=False)
    pred, pred_segs = perturb(rng, gt, gt_segs, strength=4)
    expected = pq_stats(torch.from_numpy(pred), pred_segs, torch.from_numpy(gt), gt_segs, len(CATEGORIES))

    def shift(ids, segs):
        shifted = torch.from_numpy(np.where(ids > 0, ids + offset, 0))
        return shifted, [{**s, "id": s["id"] + offset} for s in segs]

    got = pq_stats(*shift(pred, pred_segs), *shift(gt, gt_segs), len(CATEGORIES))
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    pred32, gt32 = torch.from_numpy(pred).int(), torch.from_numpy(gt).int()
    got32 = pq_stats(pred32, pred_segs, gt32, gt_segs, len(CATEGORIES))
    assert all(torch.equal(a, b) for a, b in zip(got32, expected))


def test_more_pairs_than_pixels_stays_exact():
    # 300 GT rows x 300 predicted columns: 90601 possible pairs > 90000 pixels.
    n = 300
    gt = torch.arange(1, n + 1).view(n, 1).expand(n, n)
    pred = torch.arange(1, n + 1).view(1, n).expand(n, n)
    segs = [seg(i, i % 2) for i in range(1, n + 1)]
    iou, tp, fp, fn = stats_list(pred, segs, gt, segs)
    assert tp == [0, 0] and fp == [150, 150] and fn == [150, 150]


def test_identity_is_perfect_at_2560_px_with_847_classes():
    rng = np.random.default_rng(2)
    small, segs = random_panoptic(rng, 40, 64, large_ids=True)
    big = torch.from_numpy(small).repeat_interleave(64, 0).repeat_interleave(40, 1)  # (2560, 2560)
    segs = [{**s, "category": s["category"] * 100 + 40} for s in segs]
    iou, tp, fp, fn = pq_stats(big, segs, big, segs, num_classes=847)
    present = {s["category"] for s in segs if s["id"] in set(np.unique(small).tolist()) and not s["iscrowd"]}
    assert set(tp.nonzero().flatten().tolist()) == present
    assert int(fp.sum()) == 0 and torch.allclose(iou, tp.double())


def test_errors_name_the_culprit():
    ids = torch.tensor([[1, 2]])
    with pytest.raises(DatasetError, match=r"\[2\]"):
        pq_stats(ids, [seg(1, 0), seg(2, 0)], ids, [seg(1, 0)], 2)
    with pytest.raises(ValueError, match=r"\[2\]") as info:
        pq_stats(ids, [seg(1, 0)], ids, [seg(1, 0), seg(2, 0)], 2)
    assert not isinstance(info.value, DatasetError)
    with pytest.raises(ValueError, match=r"\[9\].*no pixel"):
        pq_stats(ids, [seg(1, 0), seg(2, 0), seg(9, 1)], ids, [seg(1, 0), seg(2, 0)], 2)
    with pytest.raises(ValueError, match="category 5"):
        pq_stats(ids, [seg(1, 5), seg(2, 0)], ids, [seg(1, 0), seg(2, 0)], 2)
    with pytest.raises(DatasetError, match="repeats the ids"):
        pq_stats(ids, [seg(1, 0), seg(2, 0)], ids, [seg(1, 0), seg(2, 0), seg(2, 1)], 2)
    with pytest.raises(DatasetError, match="negative id -6"):
        pq_stats(ids, [seg(1, 0), seg(2, 0)], -3 * ids, [seg(1, 0), seg(2, 0)], 2)
    with pytest.raises(ValueError, match="shape"):
        pq_stats(ids, [], ids.T, [], 2)


def _random_batch(rng, n_images):
    batch = []
    for _ in range(n_images):
        gt, gt_segs = random_panoptic(rng)
        if rng.random() < 0.2:
            pred, pred_segs = independent_prediction(rng, *gt.shape)
        else:
            pred, pred_segs = perturb(rng, gt, gt_segs, strength=int(rng.integers(0, 6)))
        batch.append((gt, gt_segs, pred, pred_segs))
    return batch


def _update(metric, batch):
    for gt, gt_segs, pred, pred_segs in batch:
        metric.update(torch.from_numpy(pred), pred_segs, torch.from_numpy(gt), gt_segs)


@pytest.mark.parametrize("seed", range(6))
def test_parity_with_coco_panoptic_api_on_random_maps(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    batch = _random_batch(rng, 25)
    gj, gf = write_panoptic(tmp_path, "gt", [(i, b[0], b[1]) for i, b in enumerate(batch, 1)])
    pj, pf = write_panoptic(tmp_path, "pred", [(i, b[2], b[3]) for i, b in enumerate(batch, 1)])
    ref = reference_pq(gj, gf, pj, pf)

    metric = PanopticQuality(IS_THING)
    _update(metric, batch)
    ours, per_class = metric.compute(), metric.per_class()
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert float(ours[key.upper() + suffix]) == pytest.approx(100 * ref[name][key], abs=1e-6)
        assert int(ours["n" + suffix]) == ref[name]["n"]
    for k, cat in enumerate(CATEGORIES):
        r_iou, r_tp, r_fp, r_fn = ref["stat"][cat["id"]]
        assert (int(metric.tp[k]), int(metric.fp[k]), int(metric.fn[k])) == (r_tp, r_fp, r_fn)
        assert float(metric.iou_sum[k]) == pytest.approx(r_iou, abs=1e-9)
        for key in ("pq", "sq", "rq"):
            expected = 100 * ref["per_class"][cat["id"]][key]
            assert float(per_class[key.upper()][k]) == pytest.approx(expected, abs=1e-6)


def test_split_states_sum_to_the_whole():
    # What DDP does: each rank sees part of the images, the states are summed.
    rng = np.random.default_rng(7)
    batch = _random_batch(rng, 12)
    whole, first, second = (PanopticQuality(IS_THING) for _ in range(3))
    _update(whole, batch)
    _update(first, batch[:5])
    _update(second, batch[5:])
    for name in ("iou_sum", "tp", "fp", "fn"):
        assert first._reductions[name].__name__ == "dim_zero_sum"
        summed = getattr(first, name) + getattr(second, name)
        assert torch.allclose(summed.double(), getattr(whole, name).double(), rtol=0, atol=1e-12)
    first.merge_state(second)
    for key, value in whole.compute().items():
        assert float(first.compute()[key]) == pytest.approx(float(value), abs=1e-9), key
    assert int(whole.tp.sum()) > 0 and int(whole.fp.sum()) > 0 and int(whole.fn.sum()) > 0


def test_update_batch_and_empty_metric():
    rng = np.random.default_rng(8)
    batch = _random_batch(rng, 4)
    one, many = PanopticQuality(IS_THING), PanopticQuality(IS_THING)
    _update(one, batch)
    many.update_batch(
        [torch.from_numpy(b[2]) for b in batch], [b[3] for b in batch], [torch.from_numpy(b[0]) for b in batch], [b[1] for b in batch]
    )
    assert torch.equal(one.tp, many.tp) and torch.equal(one.iou_sum, many.iou_sum)
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = PanopticQuality([True, False]).compute()
    assert float(empty["PQ"]) == 0.0 and int(empty["n"]) == 0
    assert set(empty) == {f"{m}{s}" for m in ("PQ", "SQ", "RQ", "n") for s in ("", "_th", "_st")}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    batch = _random_batch(rng, 6)
    cpu, gpu = PanopticQuality(IS_THING), PanopticQuality(IS_THING).cuda()
    _update(cpu, batch)
    _update(gpu, batch)
    for key, value in cpu.compute().items():
        assert float(gpu.compute()[key]) == pytest.approx(float(value), abs=1e-9)
