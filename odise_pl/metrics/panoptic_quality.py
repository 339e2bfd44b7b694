"""Panoptic quality (PQ / SQ / RQ) with the semantics of the COCO panoptic API.

One image is reduced to per-category sums ``(iou_sum, tp, fp, fn)`` by
:func:`pq_stats`; :class:`PanopticQuality` adds them up in sum-reduced states
(exact under DDP) and :func:`summarize_pq` turns the sums into the API's table.

Semantics (those of ``pq_compute_single_core`` in cocodataset/panopticapi):

* a prediction matches a ground-truth (GT) segment when both have the same
  category, the GT segment is not crowd, and IoU > 0.5, where the union leaves
  out the GT VOID pixels (id 0) inside the prediction;
* GT segments and their areas come from the segment list, as the API takes them
  from the JSON ``segments_info``: a GT segment's ``area`` (when given) enters
  the union instead of its pixel count, and a listed GT segment without pixels
  is a false negative unless crowd; predicted areas are always counted from the
  map (the API overwrites them too);
* unmatched non-crowd GT segments are false negatives;
* an unmatched prediction is not a false positive when more than half of its
  pixels are VOID or belong to the crowd segment of its category; like the API,
  only the *last listed* crowd segment of each category is used for this test;
* PQ averages over categories with TP + FP + FN > 0.

Deliberate differences from the API, both on malformed input: a GT id found in
the map but missing from the segment list raises :class:`DatasetError` (the API
silently ignores those pixels), and a GT segment without an ``area`` key is
counted from the map (the API raises ``KeyError``). ``area`` matters on
ADE20K-150 as the reference prepares it: a stuff segment's area is that of its
semantic mask before the thing instances were pasted over it.

Example:
    >>> import torch
    >>> gt = torch.tensor([[1, 1], [2, 0]])
    >>> pred = torch.tensor([[5, 5], [6, 6]])
    >>> stats = pq_stats(pred, [{"id": 5, "category": 0}, {"id": 6, "category": 1}],
    ...                  gt, [{"id": 1, "category": 0, "iscrowd": 0},
    ...                       {"id": 2, "category": 1, "iscrowd": 0}], num_classes=2)
    >>> [s.tolist() for s in stats[1:]]
    [[1, 1], [0, 0], [0, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from odise_pl.errors import DatasetError
from odise_pl.metrics import pq_summary

__all__ = ["PanopticQuality", "pq_stats", "summarize_pq", "per_class_pq"]

_MAX_DIRECT_ID = 1 << 20
_HASH_SHIFTS = (7, 11, 9, 13, 5, 15, 3, 17)
_MAX_HASH_BITS = 20


class _Segments(NamedTuple):
    """A segment list as tensors; slot 0 is id 0 (VOID / no segment). All (S+1,)."""

    ids: Tensor  # int64, sorted, ids[0] == 0
    category: Tensor  # int64, -1 at slot 0
    iscrowd: Tensor  # bool
    crowd_for_fp: Tensor  # bool: the last listed crowd segment of its category
    area: Tensor  # int64: the listed ``area``, -1 where not given (count the pixels) and at slot 0


def _segment_table(segments: Sequence[dict], num_classes: int, role: str, error: type, device) -> _Segments:
    """Validate a segment list and turn it into sorted tensors."""
    try:
        ids = [int(seg["id"]) for seg in segments]
        cats = [int(seg["category"]) for seg in segments]
    except KeyError as exc:
        raise error(
            f"A {role} segment dict lacks the key {exc}; each needs 'id' (its value in the id map) and "
            f"'category' (contiguous class index 0..{num_classes - 1})."
        ) from None
    crowd = [bool(seg.get("iscrowd", 0)) for seg in segments]
    try:
        areas = [-1 if seg.get("area") is None else int(seg["area"]) for seg in segments]
    except (TypeError, ValueError):
        raise error(f"A {role} segment has a non-integer 'area'; give its pixel count or leave it out.") from None
    negative = [int(seg["id"]) for seg in segments if seg.get("area") is not None and int(seg["area"]) < 0]
    if negative:
        raise error(f"The {role} segments {negative[:5]} have a negative 'area'; give the pixel count or leave it out.")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise error(f"The {role} segment list repeats the ids {dup}; ids must be unique within an image.")
    for seg_id, cat in zip(ids, cats):
        if seg_id <= 0:
            raise error(f"The {role} segment id {seg_id} is invalid: ids must be > 0 (0 marks VOID).")
        if not 0 <= cat < num_classes:
            raise error(
                f"The {role} segment id {seg_id} has category {cat}, outside 0..{num_classes - 1} "
                "(categories are contiguous class indices, not dataset category ids)."
            )
    # The API keeps a dict category -> crowd id, so the last listed crowd segment wins.
    last_crowd = set({cat: i for i, cat, c in zip(ids, cats, crowd) if c}.values())
    ids_t = torch.tensor([0, *ids], dtype=torch.long, device=device)
    cats_t = torch.tensor([-1, *cats], dtype=torch.long, device=device)
    crowd_t = torch.tensor([False, *crowd], dtype=torch.bool, device=device)
    fp_crowd_t = torch.tensor([False, *(i in last_crowd for i in ids)], dtype=torch.bool, device=device)
    area_t = torch.tensor([-1, *areas], dtype=torch.long, device=device)
    order = torch.argsort(ids_t)
    return _Segments(ids_t[order], cats_t[order], crowd_t[order], fp_crowd_t[order], area_t[order])


def _hash(ids: Tensor, shift: int, bits: int) -> Tensor:
    """Xor-shift hash of non-negative int32 ids into ``bits`` bits (a new tensor)."""
    out = ids >> shift
    out ^= ids
    out &= (1 << bits) - 1
    return out


def _lookup(flat: Tensor, table: Tensor, values: Tensor, max_id: int) -> tuple[Tensor, bool]:
    """Look ids up in ``table`` without sorting the pixels.

    Small ids use a direct table; larger int32 ids (COCO's RGB ids reach 2**24)
    a hash table made collision-free for the listed ids and checked pixel by
    pixel; int64 ids fall back to a binary search.

    Args:
        flat: (N,) int32 or int64 ids in 0..max_id.
        table: (S+1,) int64 distinct sorted ids.
        values: (S+1,) int64 non-negative value returned for each table entry.
        max_id: ``flat.max()``.

    Returns:
        ``(out, ok)``: (N,) values in ``flat``'s dtype (garbage where an id is
        not in ``table``) and whether every id was found.
    """
    dtype, device = flat.dtype, flat.device
    if max_id <= _MAX_DIRECT_ID:
        lut = torch.full((max_id + 1,), -1, dtype=dtype, device=device)
        keep = table <= max_id
        lut[table[keep]] = values[keep].to(dtype)
        out = lut.index_select(0, flat)
        return out, int(out.min()) >= 0
    if dtype == torch.int32:
        bits = min(max(10, 2 * table.numel().bit_length() + 3), _MAX_HASH_BITS)
        for shift in _HASH_SHIFTS:
            keys = _hash(table, shift, bits)
            if torch.unique(keys).numel() < table.numel():
                continue  # two listed ids collide: try another shift
            lut = torch.full((2, 1 << bits), -1, dtype=dtype, device=device)
            lut[0, keys], lut[1, keys] = values.to(dtype), table.to(dtype)
            hashed = _hash(flat, shift, bits)  # (N,)
            return lut[0].index_select(0, hashed), torch.equal(lut[1].index_select(0, hashed), flat)
    flat = flat.long()
    pos = torch.searchsorted(table, flat).clamp_(max=table.numel() - 1)
    return values.index_select(0, pos), torch.equal(table.index_select(0, pos), flat)


def _slot_map(id_map: Tensor, table: Tensor, scale: int, role: str, error: type) -> Tensor:
    """(H, W) id map -> (H*W,) ``slot * scale`` (slot in 0..S); raises ``error`` on unlisted ids.

    The result is int32 when ids and ``S * scale`` fit (the fast path), else int64.
    """
    if id_map.dtype.is_floating_point or id_map.dtype == torch.bool or id_map.is_complex():
        raise error(f"The {role} id map must hold integers, got {id_map.dtype}.")
    flat = id_map.reshape(-1)
    if flat.numel() == 0:
        return flat.long()
    lo, hi = (int(v) for v in torch.aminmax(flat))
    if lo < 0:
        raise error(f"The {role} id map holds the negative id {lo}; ids must be >= 0 (0 marks VOID).")
    fits = hi < 2**31 and table.numel() * scale < 2**31
    flat = flat.to(torch.int32 if fits else torch.int64)
    values = torch.arange(table.numel(), device=table.device) * scale
    out, ok = _lookup(flat, table, values, hi)
    if not ok:
        flat = flat.long()
        missing = torch.unique(flat[~torch.isin(flat, table)])[:5].tolist()
        raise error(
            f"The {role} id map holds segment ids {missing} that are not in its segment list; "
            "every non-zero id in the map needs an entry {'id': ..., 'category': ...}."
        )
    return out


def _pair_counts(codes: Tensor, n_gt: int, n_pred: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel count of every (GT slot, pred slot) pair that occurs, via one bincount.

    Args:
        codes: (H*W,) int64 ``gt_slot * n_pred + pred_slot``.

    Returns:
        ``(gt, pred, count)``, each (M,) int64 over the M occurring pairs.
    """
    if n_gt * n_pred <= max(codes.numel(), 1 << 16):
        table = torch.bincount(codes, minlength=n_gt * n_pred)  # (n_gt * n_pred,)
        code = table.nonzero().squeeze(1)
        count = table[code]
    else:  # more pairs than pixels: keep memory bounded by the image size
        code, count = torch.unique(codes, return_counts=True)
    return code // n_pred, code % n_pred, count


def pq_stats(
    pred_ids: Tensor,
    pred_segments: Sequence[dict],
    gt_ids: Tensor,
    gt_segments: Sequence[dict],
    num_classes: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-category PQ sums of one image, as the COCO panoptic API counts them.

    Cost: two table look-ups and one bincount over the pixels, then tensor ops
    over the (GT segment, predicted segment) pairs that overlap; memory is
    O(H*W + number of segments + num_classes).

    Args:
        pred_ids: (H, W) integer map of predicted segment ids; 0 = no segment.
        pred_segments: ``[{"id": int, "category": int}, ...]``, one per non-zero id
            of ``pred_ids``; ``category`` is a contiguous index 0..K-1.
        gt_ids: (H, W) integer map of GT segment ids; 0 = VOID (unlabeled).
        gt_segments: ``[{"id", "category", "iscrowd"[, "area"]}, ...]``, one per non-zero
            id of ``gt_ids`` (listed ids without pixels count as false negatives); ``area``,
            when given, is the segment's area in the union (the JSON's, as the API uses it),
            else its pixel count.
        num_classes: K.

    Returns:
        ``(iou_sum, tp, fp, fn)``: (K,) float64, (K,) int64, (K,) int64, (K,) int64
        on the device of ``pred_ids``.

    Raises:
        DatasetError: ``gt_ids`` holds an id missing from ``gt_segments``, or a
            GT segment is malformed.
        ValueError: the same for the prediction, or a listed predicted segment
            has no pixel (the API rejects those too).
    """
    if pred_ids.shape != gt_ids.shape:
        raise ValueError(f"Prediction map {tuple(pred_ids.shape)} and GT map {tuple(gt_ids.shape)} differ in shape.")
    device = pred_ids.device
    gt_ids = gt_ids.to(device)
    gt = _segment_table(gt_segments, num_classes, "ground-truth", DatasetError, device)
    pred = _segment_table(pred_segments, num_classes, "prediction", ValueError, device)
    n_gt, n_pred = gt.ids.numel(), pred.ids.numel()
    gt_codes = _slot_map(gt_ids, gt.ids, n_pred, "ground-truth", DatasetError)  # (H*W,) slot * n_pred
    pred_slots = _slot_map(pred_ids, pred.ids, 1, "prediction", ValueError)  # (H*W,)
    if gt_codes.dtype != pred_slots.dtype:
        gt_codes, pred_slots = gt_codes.long(), pred_slots.long()
    codes = gt_codes.add_(pred_slots)
    g, p, count = _pair_counts(codes, n_gt, n_pred)
    gt_area = torch.zeros(n_gt, dtype=torch.long, device=device).index_add_(0, g, count)
    gt_area = torch.where(gt.area >= 0, gt.area, gt_area)  # the listed area, as the API's JSON area
    pred_area = torch.zeros(n_pred, dtype=torch.long, device=device).index_add_(0, p, count)
    on_void = g == 0
    void_in_pred = torch.zeros(n_pred, dtype=torch.long, device=device)
    void_in_pred.index_add_(0, p[on_void], count[on_void])
    if n_pred > 1 and bool((pred_area[1:] == 0).any()):
        empty = pred.ids[1:][pred_area[1:] == 0][:5].tolist()
        raise ValueError(
            f"The predicted segments {empty} are listed but have no pixel in the prediction map (the COCO panoptic API rejects those too)."
        )

    # Matches: same category, non-crowd GT, IoU > 0.5 (2 * inter > union in integers).
    g_cat, p_cat = gt.category[g], pred.category[p]
    same_cat = (g_cat == p_cat) & (g > 0) & (p > 0)
    union = pred_area[p] + gt_area[g] - count - void_in_pred[p]
    match = same_cat & ~gt.iscrowd[g] & (2 * count > union)
    match_cat = g_cat[match]
    iou_sum = torch.zeros(num_classes, dtype=torch.float64, device=device)
    iou_sum.index_add_(0, match_cat, count[match].double() / union[match].double())
    tp = torch.bincount(match_cat, minlength=num_classes)
    gt_matched = torch.zeros(n_gt, dtype=torch.bool, device=device)
    gt_matched[g[match]] = True
    pred_matched = torch.zeros(n_pred, dtype=torch.bool, device=device)
    pred_matched[p[match]] = True

    # False negatives: unmatched non-crowd GT segments (slot 0 is VOID, never a segment).
    fn_mask = ~gt_matched & ~gt.iscrowd
    fn_mask[0] = False
    fn = torch.bincount(gt.category[fn_mask], minlength=num_classes)

    # False positives: unmatched predictions not mostly on VOID + same-category crowd.
    on_crowd = same_cat & gt.crowd_for_fp[g]
    ignored = void_in_pred.index_add(0, p[on_crowd], count[on_crowd])
    fp_mask = ~pred_matched & (2 * ignored <= pred_area)
    fp_mask[0] = False
    fp = torch.bincount(pred.category[fp_mask], minlength=num_classes)
    return iou_sum, tp, fp, fn


def per_class_pq(iou_sum: Tensor, tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Tensor]:
    """:func:`odise_pl.metrics.pq_summary.per_class_pq` on tensors (on the sums' device).

    Args:
        iou_sum, tp, fp, fn: (K,) sums.

    Returns:
        ``{"PQ", "SQ", "RQ"}`` (K,) float64 and ``"valid"`` (K,) bool (TP+FP+FN > 0).
    """
    scores = pq_summary.per_class_pq(*(t.detach().cpu().numpy() for t in (iou_sum, tp, fp, fn)))
    return {key: torch.from_numpy(value).to(tp.device) for key, value in scores.items()}


def summarize_pq(iou_sum: Tensor, tp: Tensor, fp: Tensor, fn: Tensor, is_thing: Tensor) -> dict[str, Tensor]:
    """:func:`odise_pl.metrics.pq_summary.summarize_pq` as tensors on the sums' device.

    Args:
        iou_sum, tp, fp, fn: (K,) sums.
        is_thing: (K,) bool.

    Returns:
        ``PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st`` (float64 scalars, 0-100)
        and ``n, n_th, n_st`` (int64 scalars): the number of categories averaged.
        An empty average (n = 0) reads 0.
    """
    sums = (t.detach().cpu().numpy() for t in (iou_sum, tp, fp, fn))
    out = pq_summary.summarize_pq(*sums, is_thing.detach().cpu().numpy().astype(bool))
    return {
        key: torch.tensor(value, dtype=torch.int64 if key.startswith("n") else torch.float64, device=tp.device)
        for key, value in out.items()
    }


class PanopticQuality(Metric):
    """Dataset-level PQ with COCO panoptic API semantics; states are sum-reduced.

    Args:
        is_thing: one bool per contiguous category (K entries).
        **kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = PanopticQuality(is_thing=[True, False])
        >>> ids = torch.tensor([[1, 1], [2, 2]])
        >>> segs = [{"id": 1, "category": 0, "iscrowd": 0}, {"id": 2, "category": 1, "iscrowd": 0}]
        >>> metric.update(ids, segs, ids, segs)
        >>> float(metric.compute()["PQ"])
        100.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, is_thing: Sequence[bool], **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = len(is_thing)
        if self.num_classes == 0:
            raise ValueError("PanopticQuality needs at least one category in is_thing.")
        self.register_buffer("is_thing", torch.as_tensor(list(is_thing), dtype=torch.bool), persistent=False)
        k = self.num_classes
        self.add_state("iou_sum", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tp", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fp", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fn", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_ids, pred_segments, gt_ids, gt_segments) -> None:
        """Add one image, or a batch given as lists.

        Args:
            pred_ids: (H, W) integer map (or a list of them); 0 = no segment.
            pred_segments: list of ``{"id", "category"}`` (or a list of such lists).
            gt_ids: (H, W) integer map (or a list); 0 = VOID.
            gt_segments: list of ``{"id", "category", "iscrowd"[, "area"]}`` (or a list of lists);
                see :func:`pq_stats` for ``area``.
        """
        if isinstance(pred_ids, Tensor):
            pred_ids, pred_segments = [pred_ids], [pred_segments]
            gt_ids, gt_segments = [gt_ids], [gt_segments]
        elif not isinstance(pred_ids, (list, tuple)):
            raise TypeError(f"pred_ids must be an (H, W) tensor or a list of them, got {type(pred_ids).__name__}.")
        if not len(pred_ids) == len(pred_segments) == len(gt_ids) == len(gt_segments):
            raise ValueError("update got batch lists of different lengths.")
        for pred, pred_segs, gt, gt_segs in zip(pred_ids, pred_segments, gt_ids, gt_segments):
            pred, gt = torch.as_tensor(pred, device=self.device), torch.as_tensor(gt, device=self.device)
            iou_sum, tp, fp, fn = pq_stats(pred, pred_segs, gt, gt_segs, self.num_classes)
            self.iou_sum += iou_sum
            self.tp += tp
            self.fp += fp
            self.fn += fn

    def update_batch(
        self,
        pred_ids: Sequence[Tensor],
        pred_segments: Sequence[Sequence[dict]],
        gt_ids: Sequence[Tensor],
        gt_segments: Sequence[Sequence[dict]],
    ) -> None:
        """Add a batch: four equally long lists, one entry per image (see :meth:`update`)."""
        self.update(list(pred_ids), list(pred_segments), list(gt_ids), list(gt_segments))

    def compute(self) -> dict[str, Tensor]:
        """PQ/SQ/RQ for All, Things (``_th``) and Stuff (``_st``) in percent, and n, n_th, n_st."""
        return summarize_pq(self.iou_sum, self.tp, self.fp, self.fn, self.is_thing)

    def per_class(self) -> dict[str, Tensor]:
        """Per-category scores.

        Returns:
            ``PQ, SQ, RQ`` (K,) float64 in percent (0 where undefined, like the API),
            ``TP, FP, FN`` (K,) int64 and ``valid`` (K,) bool: whether the category
            enters the averages (TP + FP + FN > 0).
        """
        scores = per_class_pq(self.iou_sum, self.tp, self.fp, self.fn)
        out = {key: 100 * scores[key] for key in ("PQ", "SQ", "RQ")}
        out.update(TP=self.tp.clone(), FP=self.fp.clone(), FN=self.fn.clone(), valid=scores["valid"])
        return out
