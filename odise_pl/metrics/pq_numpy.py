"""Fast single-core PQ sums of COCO panoptic PNG pairs, in numpy (the folder evaluator's hot path).

Same semantics as :func:`odise_pl.metrics.panoptic_quality.pq_stats` (those of
the COCO panoptic API's ``pq_compute_single_core``; see that module), with the
per-image cost cut down to what the PNG decoder leaves:

1. :func:`odise_pl.formats.coco_panoptic.read_panoptic_png` inflates the PNG straight into a preallocated
   ``uint32`` array (PIL's RGB pixel storage is 4 bytes, so ``R + 256 G +
   65536 B`` is the array masked with ``0xFFFFFF``: no RGB->id arithmetic, no
   extra copy);
2. :class:`IdLookup` maps ids to compact slots with one gather from a table
   reused across images (no sort, no ``np.unique``); unlisted ids get slot 0;
3. the maps are cut into runs of pixels where neither changes (panoptic maps are
   piecewise constant: a few percent of the pixels start a run), and one weighted
   ``np.bincount`` of the runs' lengths over ``gt_slot * (n_pred + 1) + pred_slot``
   gives every (GT segment, predicted segment) overlap (in chunks of 256K pixels,
   so the temporary memory is bounded for 2560-pixel maps);
4. matching, FN and FP are array operations over the overlapping pairs.

Memory: the decoded maps (4 bytes/pixel each), one reused ``uint16`` id table
of at most 2**24 entries (32 MiB, sized by the largest listed id), two 256K
bool buffers, per-chunk run arrays and O(segments^2 + num_classes).

Example:
    >>> import numpy as np
    >>> gt, pred = np.array([[1, 1], [2, 0]], np.uint32), np.array([[5, 5], [6, 6]], np.uint32)
    >>> stats = pq_stats_numpy(gt, SegmentTable.build([1, 2], [0, 1], [0, 0]),
    ...                        pred, SegmentTable.build([5, 6], [0, 1], [0, 0]), num_classes=2)
    >>> [s.tolist() for s in stats[1:]]
    [[1, 1], [0, 0], [0, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from odise_pl.formats.coco_panoptic import ID_BITS as _ID_BITS

__all__ = ["SegmentTable", "IdLookup", "Scratch", "process_scratch", "pq_stats_numpy"]

_MAX_SLOTS = np.iinfo(np.uint16).max  # slot + 1 is stored in uint16
_CHUNK = 1 << 18  # pixels per chunk: the int64 temporaries (2 MiB each) stay in cache


class SegmentTable(NamedTuple):
    """One image's segment list as arrays; slot 0 is id 0 (VOID / no segment). All (S+1,)."""

    ids: np.ndarray  # int64, ids[0] == 0
    category: np.ndarray  # int64 contiguous class, -1 at slot 0
    iscrowd: np.ndarray  # bool
    crowd_for_fp: np.ndarray  # bool: the last listed crowd segment of its category (the API's dict)
    area: np.ndarray  # int64: the listed area (the JSON's), -1 where the pixels are counted (and at slot 0)

    @classmethod
    def build(
        cls, ids: Sequence[int], categories: Sequence[int], iscrowd: Sequence[int], areas: Sequence[int | None] | None = None
    ) -> SegmentTable:
        """From parallel lists (listing order kept: it decides which crowd segment the API uses).

        Args:
            ids, categories, iscrowd: one entry per segment.
            areas: the GT JSON's ``area`` per segment (None entries, or None for all: count the
                pixels). The COCO API takes GT areas from the JSON; predicted areas are counted.

        Raises:
            ValueError: an id is <= 0 or repeated, or an area is negative (callers re-raise naming
                the file).
        """
        ids_a = np.asarray([0, *ids], dtype=np.int64)
        cats = np.asarray([-1, *categories], dtype=np.int64)
        crowd = np.asarray([0, *iscrowd], dtype=np.int64) == 1
        if ids_a.size > 1 and int(ids_a[1:].min()) <= 0:
            raise ValueError(f"segment id {int(ids_a[1:].min())} is invalid: ids must be > 0 (0 marks VOID)")
        if np.unique(ids_a).size != ids_a.size:
            uniq, counts = np.unique(ids_a, return_counts=True)
            raise ValueError(f"the segment ids {uniq[counts > 1].tolist()} are listed more than once")
        # The API keeps {category: crowd id}: the last listed crowd segment of each category wins.
        last_crowd = np.zeros_like(crowd)
        crowd_slots = np.flatnonzero(crowd)
        if crowd_slots.size:
            rev = crowd_slots[::-1]
            _, first_in_rev = np.unique(cats[rev], return_index=True)
            last_crowd[rev[first_in_rev]] = True
        given = list(areas) if areas is not None else [None] * len(ids)
        if len(given) != len(ids):
            raise ValueError(f"{len(given)} areas for {len(ids)} segments")
        bad = [i for i, a in zip(ids, given) if a is not None and int(a) < 0]
        if bad:
            raise ValueError(f"the segments {bad[:5]} have a negative 'area'")
        listed = [-1 if a is None else int(a) for a in given]
        return cls(ids_a, cats, crowd, last_crowd, np.asarray([-1, *listed], dtype=np.int64))


class IdLookup:
    """Maps the ids of a decoded map to ``slot + 1`` with one gather from a reused table (0 = unlisted).

    The ``uint16`` table grows to the largest listed id + 2 (at most 2**24 + 1
    entries, 32 MiB, allocated once per process: see :func:`process_scratch`)
    and is cleaned entry by entry after each image, so an image costs
    O(pixels + segments), not O(2**24). Use one
    instance per map role (GT, prediction): a table serves one segment list at
    a time.

    Example:
        >>> lookup = IdLookup()
        >>> lut = lookup.bind(SegmentTable.build([7, 3], [0, 0], [0, 0]))
        >>> IdLookup.slots(np.array([0, 3, 7, 9], np.uint32), lut).tolist()
        [1, 3, 2, 0]
        >>> lookup.unbind()
    """

    def __init__(self) -> None:
        self._table = np.zeros(1024, dtype=np.uint16)
        self._bound: np.ndarray | None = None

    def bind(self, table: SegmentTable) -> np.ndarray:
        """Enter ``table``'s ids; returns the id -> slot + 1 table to pass to :meth:`slots`."""
        self.unbind()
        if table.ids.size >= _MAX_SLOTS:
            raise ValueError(f"{table.ids.size - 1} segments in one image; at most {_MAX_SLOTS - 1} are supported")
        slot = np.flatnonzero(table.ids < 1 << _ID_BITS)  # larger listed ids cannot occur in a PNG
        seg_ids = table.ids[slot]
        top = int(seg_ids.max()) + 2  # the last entry stays 0: clipped unlisted ids land there
        if top > self._table.size:
            # np.full, not np.zeros: one memset now is cheaper than page faults at random ids later
            size = max(top, min(2 * self._table.size, (1 << _ID_BITS) + 1))
            self._table = np.full(size, 0, dtype=np.uint16)
        self._table[seg_ids] = slot + 1
        self._bound = seg_ids
        return self._table[:top]

    def unbind(self) -> None:
        """Reset the entries :meth:`bind` set."""
        if self._bound is not None:
            self._table[self._bound] = 0
            self._bound = None

    @staticmethod
    def slots(ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
        """(N,) ids -> (N,) uint16 ``slot + 1``; 0 where an id is not listed."""
        return np.take(lut, ids, mode="clip")


class Scratch:
    """Reused per-process state of :func:`pq_stats_numpy`: the GT and prediction id tables and
    chunk-sized work buffers (fresh multi-MiB temporaries per image cost more in page faults than
    the arithmetic itself)."""

    def __init__(self) -> None:
        self.gt_lookup, self.pred_lookup = IdLookup(), IdLookup()
        self.new_run = self.pred_change = np.empty(0, dtype=bool)

    def run_buffers(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Two (m,) bool work buffers (run starts, prediction changes; grown on demand, then kept)."""
        if self.new_run.size < m:
            self.new_run, self.pred_change = np.empty(m, dtype=bool), np.empty(m, dtype=bool)
        return self.new_run[:m], self.pred_change[:m]


_PROCESS_SCRATCH: Scratch | None = None


def process_scratch() -> Scratch:
    """This process's :class:`Scratch` (its tables are allocated once, then reused by every evaluation)."""
    global _PROCESS_SCRATCH
    if _PROCESS_SCRATCH is None:
        _PROCESS_SCRATCH = Scratch()
    return _PROCESS_SCRATCH


def _pair_counts(
    gt_ids: np.ndarray, gt_lut: np.ndarray, pred_ids: np.ndarray, pred_lut: np.ndarray, n_gt: int, n_pred: int, scratch: Scratch
):
    """Overlap (pixel count) of every occurring (GT slot, pred slot) pair.

    Walks the flat maps in cache-sized chunks. Panoptic maps are piecewise constant, so each
    chunk is first cut into runs of pixels where neither map changes (two comparisons with the
    next pixel); only the first pixel of each run is looked up (id -> slot + 1 gathers) and the
    runs' lengths are counted into ``(gt_slot + 1) * (n_pred + 1) + pred_slot + 1`` with one
    weighted bincount (or, when there are more possible pairs than pixels in a chunk, a count of
    the occurring codes). Row / column 0 collects the unlisted ids.

    Returns:
        ``(g, p, count)``: (M,) int64 each over the M pairs with count > 0;
        ``g`` / ``p`` are ``slot + 1`` (0 = an id that the segment list lacks).
    """
    n = gt_ids.size
    cols = n_pred + 1
    size = (n_gt + 1) * cols
    dense = size <= max(_CHUNK, 1 << 16)
    acc = np.zeros(size, dtype=np.float64) if dense else None  # run lengths: exact below 2**53
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        gt_chunk, pred_chunk = gt_ids[start : start + m], pred_ids[start : start + m]
        new_run, pred_change = scratch.run_buffers(m)
        new_run[0] = True
        np.not_equal(gt_chunk[1:], gt_chunk[:-1], out=new_run[1:])
        np.not_equal(pred_chunk[1:], pred_chunk[:-1], out=pred_change[1:])
        np.logical_or(new_run[1:], pred_change[1:], out=new_run[1:])
        first = np.flatnonzero(new_run)
        length = np.diff(first, append=m)
        code = np.take(gt_lut, gt_chunk[first], mode="clip").astype(np.intp)
        code *= cols
        code += np.take(pred_lut, pred_chunk[first], mode="clip")
        if dense:
            acc += np.bincount(code, weights=length, minlength=size)
        else:
            keys, inverse = np.unique(code, return_inverse=True)
            parts.append((keys, np.bincount(inverse, weights=length)))
    if dense:
        code = np.flatnonzero(acc)
        count = acc[code].astype(np.int64)
    elif parts:
        code, inverse = np.unique(np.concatenate([k for k, _ in parts]), return_inverse=True)
        count = np.bincount(inverse, weights=np.concatenate([c for _, c in parts])).astype(np.int64)
    else:
        code = count = np.zeros(0, dtype=np.int64)
    return code // cols, code % cols, count


def _unlisted(ids: np.ndarray, lut: np.ndarray) -> list[int]:
    """Up to 5 distinct ids of the map that the bound segment list lacks (the error path only)."""
    return np.unique(ids[IdLookup.slots(ids, lut) == 0])[:5].tolist()


def pq_stats_numpy(
    gt_ids: np.ndarray, gt: SegmentTable, pred_ids: np.ndarray, pred: SegmentTable, num_classes: int, scratch: Scratch | None = None
):
    """Per-category PQ sums of one image, as the COCO panoptic API counts them.

    Args:
        gt_ids, pred_ids: (H, W) id maps, non-negative ids < 2**24 (as decoded from PNGs).
        gt, pred: their segment tables (contiguous categories 0..K-1). A listed GT ``area``
            replaces the GT segment's pixel count in the union, as the API's JSON area does;
            predicted areas are always counted.
        num_classes: K.
        scratch: a reused :class:`Scratch` (one per process), or None for a fresh one.

    Returns:
        ``(iou_sum, tp, fp, fn)``: (K,) float64 and three (K,) int64.

    Raises:
        ValueError: unlisted ids in a map, a listed prediction without pixels,
            or mismatched shapes; the message says which (callers add the file).
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"the prediction is {tuple(pred_ids.shape)} but the ground truth is {tuple(gt_ids.shape)}")
    scratch = scratch or Scratch()
    gt_lookup, pred_lookup = scratch.gt_lookup, scratch.pred_lookup
    n_gt, n_pred = gt.ids.size, pred.ids.size
    gt_flat, pred_flat = gt_ids.reshape(-1), pred_ids.reshape(-1)
    try:
        gt_lut, pred_lut = gt_lookup.bind(gt), pred_lookup.bind(pred)
        g, p, count = _pair_counts(gt_flat, gt_lut, pred_flat, pred_lut, n_gt, n_pred, scratch)
        for role, unlisted, flat, lut in (("ground-truth", g == 0, gt_flat, gt_lut), ("predicted", p == 0, pred_flat, pred_lut)):
            if unlisted.any():
                raise ValueError(f"the {role} map holds segment ids {_unlisted(flat, lut)} that its segments_info does not list")
    finally:
        gt_lookup.unbind()
        pred_lookup.unbind()
    g -= 1
    p -= 1
    gt_area = np.bincount(g, weights=count, minlength=n_gt).astype(np.int64)  # exact: counts < 2**53
    gt_area = np.where(gt.area >= 0, gt.area, gt_area)  # the JSON area where listed, as the API
    pred_area = np.bincount(p, weights=count, minlength=n_pred).astype(np.int64)
    on_void = g == 0
    void_in_pred = np.bincount(p[on_void], weights=count[on_void], minlength=n_pred).astype(np.int64)
    if n_pred > 1 and not pred_area[1:].all():
        empty = pred.ids[1:][pred_area[1:] == 0][:5].tolist()
        raise ValueError(
            f"the predicted segments {empty} are listed in segments_info but have no pixel "
            "in the PNG (the COCO panoptic API rejects those too)"
        )

    # Matches: same category, non-crowd GT, IoU > 0.5 (2 * inter > union, in integers).
    g_cat, p_cat = gt.category[g], pred.category[p]
    same_cat = (g_cat == p_cat) & (g > 0)
    union = pred_area[p] + gt_area[g] - count - void_in_pred[p]
    match = same_cat & ~gt.iscrowd[g] & (2 * count > union)
    match_cat = g_cat[match]
    iou_sum = np.bincount(match_cat, weights=count[match] / union[match], minlength=num_classes)
    tp = np.bincount(match_cat, minlength=num_classes)
    gt_matched = np.zeros(n_gt, dtype=bool)
    gt_matched[g[match]] = True
    pred_matched = np.zeros(n_pred, dtype=bool)
    pred_matched[p[match]] = True

    # False negatives: unmatched non-crowd GT segments (listed ones without pixels included).
    fn_mask = ~gt_matched & ~gt.iscrowd
    fn_mask[0] = False
    fn = np.bincount(gt.category[fn_mask], minlength=num_classes)

    # False positives: unmatched predictions not mostly on VOID + the same-category crowd segment.
    on_crowd = same_cat & gt.crowd_for_fp[g]
    on_crowd_px = np.bincount(p[on_crowd], weights=count[on_crowd], minlength=n_pred).astype(np.int64)
    ignored = void_in_pred + on_crowd_px
    fp_mask = ~pred_matched & (2 * ignored <= pred_area)
    fp_mask[0] = False
    fp = np.bincount(pred.category[fp_mask], minlength=num_classes)
    return iou_sum, tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64)
