"""The numpy folder-evaluation core (pq_numpy): equal to pq_stats (torch, tested against the COCO
panoptic API) on random maps, across the chunked / sparse-pair paths, and its PNG decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import read_panoptic_png as decode_panoptic_png
from odise_pl.metrics import pq_numpy, pq_summary
from odise_pl.metrics.panoptic_quality import pq_stats
from odise_pl.metrics.pq_numpy import IdLookup, Scratch, SegmentTable, pq_stats_numpy

from .synthetic_panoptic import CATEGORIES, ids_to_rgb, perturb, random_panoptic

K = len(CATEGORIES)


def table(segments) -> SegmentTable:
    return SegmentTable.build([s["id"] for s in segments], [s["category"] for s in segments], [s.get("iscrowd", 0) for s in segments])


def both(gt_ids, gt_segs, pred_ids, pred_segs, scratch=None, k=K):
    ours = pq_stats_numpy(gt_ids.astype(np.uint32), table(gt_segs), pred_ids.astype(np.uint32), table(pred_segs), k, scratch)
    ref = pq_stats(torch.from_numpy(pred_ids), pred_segs, torch.from_numpy(gt_ids), gt_segs, k)
    return ours, [t.numpy() for t in ref]


def assert_same(ours, ref):
    np.testing.assert_allclose(ours[0], ref[0], rtol=0, atol=1e-12)
    for a, b in zip(ours[1:], ref[1:]):
        assert a.dtype == np.int64 and a.tolist() == b.tolist()


@pytest.mark.parametrize("chunk", [1 << 18, 97])
def test_equals_pq_stats_on_random_maps(monkeypatch, chunk):
    monkeypatch.setattr(pq_numpy, "_CHUNK", chunk)  # 97: many chunks, one ragged
    rng = np.random.default_rng(chunk)
    scratch = Scratch()  # reused across images, as in the folder evaluator
    imperfect = 0
    for _ in range(12):
        gt_ids, gt_segs = random_panoptic(rng)
        pred_ids, pred_segs = perturb(rng, gt_ids, gt_segs, strength=int(rng.integers(0, 6)))
        ours, ref = both(gt_ids, gt_segs, pred_ids, pred_segs, scratch)
        assert_same(ours, ref)
        imperfect += int(ours[2].sum() + ours[3].sum() > 0)
    assert imperfect >= 6


def test_more_pairs_than_pixels_uses_the_sparse_path(monkeypatch):
    # 4x4 blocks of a 128x128 map: 1024 GT x 1024 predicted segments = 1M possible pairs > 64K.
    monkeypatch.setattr(pq_numpy, "_CHUNK", 4096)
    rng = np.random.default_rng(3)
    blocks = np.arange(1, 1025).reshape(32, 32)
    gt_ids = np.kron(blocks, np.ones((4, 4), dtype=np.int64)) * 7919 % (2**24 - 1) + 1
    pred_ids = np.roll(gt_ids, 1, axis=1) + 5
    gt_segs = [{"id": int(i), "category": int(rng.integers(0, K)), "iscrowd": 0} for i in np.unique(gt_ids)]
    cat = {s["id"]: s["category"] for s in gt_segs}
    pred_segs = [{"id": int(i), "category": cat[int(i) - 5]} for i in np.unique(pred_ids)]
    ours, ref = both(gt_ids, gt_segs, pred_ids, pred_segs)
    assert_same(ours, ref)
    assert int(ours[1].sum()) == 1024  # 12 of 16 pixels overlap: IoU 12/20 > 0.5 for every block


def test_crowd_void_and_the_last_listed_crowd():
    gt = np.array([[1, 1, 2, 2, 3, 3, 0, 0]])
    gt_segs = [{"id": 1, "category": 0, "iscrowd": 1}, {"id": 3, "category": 0, "iscrowd": 1}, {"id": 2, "category": 1, "iscrowd": 0}]
    # pred 9 lies on crowd 1 (not the last listed crowd of category 0): a false positive;
    # pred 8 on crowd 3 (the last listed) and VOID: ignored; pred 7 matches GT 2.
    pred = np.array([[9, 9, 7, 7, 8, 8, 8, 0]])
    pred_segs = [{"id": 9, "category": 0}, {"id": 7, "category": 1}, {"id": 8, "category": 0}]
    ours, ref = both(gt, gt_segs, pred, pred_segs, k=2)
    assert_same(ours, ref)
    assert ours[1].tolist() == [0, 1] and ours[2].tolist() == [1, 0] and ours[3].tolist() == [0, 0]


def test_unlisted_and_empty_segments_are_errors():
    gt = np.array([[1, 2, 0]], dtype=np.uint32)
    segs = SegmentTable.build([1, 2], [0, 0], [0, 0])
    with pytest.raises(ValueError, match=r"ground-truth map holds segment ids \[2\]"):
        pq_stats_numpy(gt, SegmentTable.build([1], [0], [0]), gt, segs, 1)
    with pytest.raises(ValueError, match=r"predicted map holds segment ids \[2\]"):
        pq_stats_numpy(gt, segs, gt, SegmentTable.build([1], [0], [0]), 1)
    with pytest.raises(ValueError, match=r"predicted segments \[5\] are listed"):
        pq_stats_numpy(gt, segs, gt, SegmentTable.build([1, 2, 5], [0, 0, 0], [0, 0, 0]), 1)
    with pytest.raises(ValueError, match=r"\[4\] are listed more than once"):
        SegmentTable.build([4, 4], [0, 0], [0, 0])
    # a listed id beyond 2**24 cannot be in a PNG: for the GT it is just a false negative
    iou, tp, fp, fn = pq_stats_numpy(gt, SegmentTable.build([1, 2, 2**30], [0, 0, 0], [0, 0, 0]), gt, segs, 1)
    assert tp.tolist() == [2] and fn.tolist() == [1]


def test_lookup_table_is_clean_after_each_image():
    lookup = IdLookup()
    lut = lookup.bind(SegmentTable.build([2**24 - 1, 5], [0, 0], [0, 0]))
    assert lut.size == 2**24 + 1
    assert IdLookup.slots(np.array([5, 2**24 - 1, 6], np.uint32), lut).tolist() == [3, 2, 0]
    lookup.unbind()
    lut = lookup.bind(SegmentTable.build([6], [0], [0]))
    assert IdLookup.slots(np.array([5, 6, 2**24 - 1], np.uint32), lut).tolist() == [0, 2, 0]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_decode_panoptic_png(tmp_path, mode):
    ids = np.array([[0, 1, 256], [65536, 3153362, 2**24 - 1]])
    rgb = ids_to_rgb(ids)
    img = Image.fromarray(rgb)
    if mode == "RGBA":
        img = Image.fromarray(np.concatenate([rgb, np.full((2, 3, 1), 17, np.uint8)], -1))
    elif mode == "P":
        img = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3), mode="P")
        img.putpalette(rgb.reshape(-1).tolist())  # palette entry i = the colour of pixel i
    img.save(tmp_path / "x.png")
    out = decode_panoptic_png(tmp_path / "x.png")
    assert out.dtype == np.uint32 and out.tolist() == ids.tolist()


def test_decode_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.png does not exist"):
        decode_panoptic_png(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode panoptic PNG .*bad.png"):
        decode_panoptic_png(tmp_path / "bad.png")


def test_2560_px_with_847_classes_is_exact_in_bounded_memory():
    import tracemalloc

    # 2,560 segments (40 x 64-pixel tiles) of 847 classes on a 2560x2560 map; the prediction is the
    # map rolled 8 px to the right: every tile keeps 56 of its 64 columns, IoU = 2240 / 2880 = 7/9.
    tiles = np.arange(1, 2561, dtype=np.uint32).reshape(64, 40)
    gt = np.repeat(np.repeat(tiles, 40, axis=0), 64, axis=1)
    pred = np.roll(gt, 8, axis=1)
    table = SegmentTable.build(list(range(1, 2561)), ((np.arange(2560) * 7) % 847).tolist(), [0] * 2560)
    tracemalloc.start()
    iou, tp, fp, fn = pq_stats_numpy(gt, table, pred, table, 847)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert gt.shape == (2560, 2560) and tp.sum() == 2560 and fp.sum() == 0 and fn.sum() == 0
    assert iou.sum() == pytest.approx(2560 * 7 / 9)
    # 6.5M pixels, 6.5M possible pairs: the work stays in 256K-pixel chunks (maps are 26 MB each)
    assert peak < 40 * 2**20, peak / 2**20


def test_numpy_summary_equals_the_torch_summary():
    from odise_pl.metrics.panoptic_quality import per_class_pq, summarize_pq

    rng = np.random.default_rng(3)
    k = 40
    tp, fp, fn = (rng.integers(0, 4, k) for _ in range(3))
    tp[:5] = fp[:5] = fn[:5] = 0  # undefined classes
    iou_sum = tp * rng.uniform(0.5, 1.0, k)
    is_thing = rng.random(k) < 0.5
    ours = pq_summary.summarize_pq(iou_sum, tp, fp, fn, is_thing)
    ref = summarize_pq(*(torch.from_numpy(a) for a in (iou_sum, tp, fp, fn)), torch.from_numpy(is_thing))
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value.item(), rel=1e-14, abs=1e-12), key
    assert isinstance(ours["n"], int) and ours["n"] == k - 5
    ours_pc = pq_summary.per_class_pq(iou_sum, tp, fp, fn)
    for key, value in per_class_pq(*(torch.from_numpy(a) for a in (iou_sum, tp, fp, fn))).items():
        assert np.array_equal(ours_pc[key], value.numpy()), key  # elementwise: the same arithmetic
    empty = pq_summary.summarize_pq(np.zeros(3), *(np.zeros(3, np.int64),) * 3, np.ones(3, bool))
    assert empty["PQ_st"] == 0.0 and empty["n_st"] == 0 and empty["n"] == 0
