"""PQ / SQ / RQ from the per-category sums: the one summary that both PQ cores share.

:class:`~odise_pl.metrics.panoptic_quality.PanopticQuality` (torch, training-time) and the folder
evaluator behind ``odise-pl eval panoptic`` (:mod:`odise_pl.metrics.pq_numpy`, no torch) both
accumulate ``iou_sum, tp, fp, fn`` per category; this module turns them into the COCO panoptic
API's scores, in numpy (the arrays are K long: the cost is nothing next to accumulating them).

Example:
    >>> import numpy as np
    >>> out = summarize_pq(np.array([1.5, 0.0]), np.array([2, 0]), np.array([1, 0]), np.array([0, 0]),
    ...                    np.array([True, False]))
    >>> round(out["PQ"], 4), out["n"], out["n_st"]
    (60.0, 1, 0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["per_class_pq", "summarize_pq"]


def per_class_pq(iou_sum: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Per-category scores from the sums, as fractions (0 where undefined, like the API).

    Args:
        iou_sum, tp, fp, fn: (K,) sums.

    Returns:
        ``{"PQ", "SQ", "RQ"}`` (K,) float64 and ``"valid"`` (K,) bool (TP+FP+FN > 0).
    """
    tp_f = tp.astype(np.float64)
    denom = tp_f + 0.5 * fp.astype(np.float64) + 0.5 * fn.astype(np.float64)
    valid = (tp + fp + fn) > 0
    safe = np.where(valid, denom, 1.0)
    pq = np.where(valid, iou_sum / safe, 0.0)
    sq = np.where(tp > 0, iou_sum / np.maximum(tp_f, 1.0), 0.0)
    rq = np.where(valid, tp_f / safe, 0.0)
    return {"PQ": pq, "SQ": sq, "RQ": rq, "valid": valid}


def summarize_pq(iou_sum: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, is_thing: np.ndarray) -> dict:
    """All / Things / Stuff averages in percent, like the API's printed table.

    Args:
        iou_sum, tp, fp, fn: (K,) sums.
        is_thing: (K,) bool.

    Returns:
        ``PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st`` (Python floats, 0-100) and
        ``n, n_th, n_st`` (Python ints): the number of categories averaged. An empty average reads 0.
    """
    scores = per_class_pq(iou_sum, tp, fp, fn)
    is_thing = np.asarray(is_thing, dtype=bool)
    out: dict = {}
    for suffix, group in (("", np.ones_like(is_thing)), ("_th", is_thing), ("_st", ~is_thing)):
        used = scores["valid"] & group
        n = int(used.sum())
        for key in ("PQ", "SQ", "RQ"):
            total = float(scores[key][used].sum())
            out[key + suffix] = 100 * total / n if n > 0 else 0.0
        out["n" + suffix] = n
    return out
