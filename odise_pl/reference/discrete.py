"""Discrete outputs against recorded ones: the tie rule, one principle for every decision.

**The rule.** A discrete output (a pixel's class or segment, a mask bit, an instance) may differ
from the recorded one only where the decision that produced it is within what the *measured*
float error of that decision's inputs can move. For every decision the caller measures ``err``,
the largest absolute difference between the float tensor feeding it as odise-pl computed it and
as the reference computed it (the recorded tensor, or the same score function applied to the
reference's recorded inputs), on that very input. Then:

* an **argmax** (semantic class, panoptic owner over ``score x prob``, class vs no-object) can
  pick another index only where our winner beats the recorded choice by at most ``2 * err``:
  each of the two scores may be off by ``err``, in opposite directions;
* a **threshold** (``sigmoid(mask) >= 0.5``, ``score > object_mask_threshold``) can flip only
  where our value is within ``err`` of it;
* a **ratio of counts** (the panoptic overlap test ``own_area / mask_area >= t``) can flip only
  if the pixels whose own decisions are uncertain by the two rules above can carry the ratio
  across ``t`` (interval arithmetic on the counts);
* a **top-k** keeps another (query, class) pair only if its probability is within ``2 * err`` of
  the k-th one, and a pair near that boundary is the only instance that may be missing or extra.

Why this cannot hide a functional error: ``err`` is measured, not chosen. A model that computes
something else moves the float tensors by >= 1e-2 and fails the float checks (rel. L2 <= 1e-4)
first; a recorded discrete output changed at a pixel whose margin is far above ``2 * err`` fails
here. Why it is robust: if our floats and the reference's floats are each rounded versions of
the same function, any decision they disagree on has, by the triangle inequality, a margin
within ``2 * err`` on our side, whatever CPU, SIMD path, thread count or device computed them.
Every excused pixel or instance is reported with its margin and the bound it is within.

The functions take the recorded and the computed outputs and the float inputs of each decision,
so any Mask2Former-style post-processing (ODISE, FC-CLIP) is checked the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from odise_pl.reference.checks import REL_TOL, Check, rel_l2

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
SHOWN = 6  # excused / failing items listed per check (the rest counted)


def rounding_error(values: torch.Tensor, terms: int = 1) -> float:
    """Float32 rounding bound of ``values`` computed again from identical inputs on another kernel:
    a sum of ``terms`` products carries at most ``terms * eps`` of the largest magnitude."""
    return terms * FLOAT32_EPS * float(values.detach().abs().max()) if values.numel() else 0.0


def _where(mask: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in torch.nonzero(mask)[:SHOWN]]


def _listing(points: list, margins: list[float], more: int) -> str:
    shown = ", ".join(f"{p} margin {m:.1e}" for p, m in zip(points, margins))
    return shown + (f" and {more} more" if more > 0 else "")


def argmax_check(name: str, ours_scores: torch.Tensor, ref_choice: torch.Tensor, err: float) -> Check:
    """Our ``ours_scores.argmax(0)`` (scores (C, ...)) against the recorded choice (...).

    A differing element is excused when our best score exceeds our score of the recorded choice
    by at most ``2 * err`` (``err``: measured max |ours - reference| of the scores).
    """
    ours_scores = ours_scores.detach().float().cpu()
    ref_choice = ref_choice.long().cpu()
    diff = ours_scores.argmax(0) != ref_choice
    if not diff.any():
        return Check(name, True, "exact")
    valid = (ref_choice >= 0) & (ref_choice < ours_scores.shape[0])
    at_ref = ours_scores.gather(0, ref_choice.clamp(0, ours_scores.shape[0] - 1)[None])[0]
    margin = torch.where(valid, ours_scores.max(0).values - at_ref, torch.full_like(at_ref, float("inf")))
    return _verdict(name, diff, margin, 2 * err, "2 x score error")


def threshold_check(name: str, ours_values: torch.Tensor, ref_decision: torch.Tensor, threshold: float, err: float) -> Check:
    """Our ``ours_values > threshold`` against the recorded boolean decision (same shape).

    A differing element is excused when our value is within ``err`` of the threshold.
    """
    ours_values = ours_values.detach().float().cpu()
    diff = (ours_values > threshold) != ref_decision.bool().cpu()
    if not diff.any():
        return Check(name, True, "exact")
    return _verdict(name, diff, (ours_values - threshold).abs(), err, "value error")


def _verdict(name: str, diff: torch.Tensor, margin: torch.Tensor, bound: float, what: str) -> Check:
    return _excused_or_not(
        name,
        diff,
        diff & ~(margin <= bound),
        margin,
        "element(s)",
        f"beyond the tie bound {bound:.1e} ({what})",
        f"all within the tie bound {bound:.1e} ({what})",
    )


def _excused_or_not(
    name: str, diff: torch.Tensor, bad: torch.Tensor, margin: torch.Tensor, unit: str, far: str, near: str, note: str = ""
) -> Check:
    """The verdict on differing elements ``diff``: fails listing those in ``bad`` (not excused), else
    passes listing every excused one; each listed with its margin."""
    n = int(diff.sum())
    shown = bad if bad.any() else diff
    pts = _where(shown)
    listing = _listing(pts, [float(margin[p]) for p in pts], int(shown.sum()) - len(pts))
    if bad.any():
        return Check(name, False, f"{n} {unit} differ, {int(bad.sum())} {far}: " + listing)
    return Check(name, True, f"{n} {unit} differ, {near}: " + listing + note)


def panoptic_uncertain(
    probs: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    object_mask_threshold: float,
    overlap_threshold: float,
    err_prob: float,
    err_mask: float,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Pixels whose panoptic decision (Mask2Former's panoptic inference) the measured errors can move.

    Args:
        probs: (Q, K+1) our class probabilities (no-object last); ``err_prob`` their measured error.
        mask_logits: (Q, H, W) our mask logits; ``err_mask`` the measured error of their sigmoid.

    Returns:
        (H, W) bool; (H, W) each pixel's own margin (the owner's lead over the runner-up, or its mask
        probability's distance to 0.5, whichever is smaller); one line per query whose keep /
        overlap decision is uncertain, with its margin.
    """
    probs, sig = probs.detach().float().cpu(), mask_logits.detach().float().cpu().sigmoid()
    void = probs.shape[-1] - 1
    top = probs.topk(2, -1)
    scores, labels = top.values[:, 0], top.indices[:, 0]
    keep = (labels != void) & (scores > object_mask_threshold)
    cls_margin = top.values[:, 0] - top.values[:, 1]
    void_race = (top.indices[:, :2] == void).any(-1) & (cls_margin <= 2 * err_prob)
    thr_margin = (scores - object_mask_threshold).abs()
    keep_unsure = void_race | (thr_margin <= err_prob)
    notes = [
        f"query {q}: keep decision margin {min(float(cls_margin[q]), float(thr_margin[q])):.1e}"
        for q in torch.nonzero(keep_unsure).flatten().tolist()
    ]
    err_s = err_prob + err_mask  # |d(s * sigma)| <= |ds| * sigma + s * |d sigma|, sigma, s <= 1
    S = scores.view(-1, 1, 1) * sig  # (Q, H, W)
    kept_s = torch.where(keep.view(-1, 1, 1), S, torch.full_like(S, -1.0))
    best = kept_s.max(0).values
    owner = kept_s.argmax(0)
    near = ((keep | keep_unsure).view(-1, 1, 1)) & (S >= best - 2 * err_s)  # could own the pixel
    owner_unsure = near.sum(0) > 1
    fg = sig >= 0.5
    fg_unsure = (sig - 0.5).abs() <= err_mask
    unsure = owner_unsure | fg_unsure.gather(0, owner[None])[0]
    cand = torch.where((keep | keep_unsure).view(-1, 1, 1), S, torch.full_like(S, -1.0))
    two = cand.topk(min(2, len(cand)), 0).values
    gap = two[0] - two[1] if len(two) > 1 else torch.full_like(best, float("inf"))
    margin = torch.minimum(gap, (sig.gather(0, owner[None])[0] - 0.5).abs())
    own = owner[None] == torch.arange(len(scores)).view(-1, 1, 1)
    ok_unsure = torch.zeros_like(keep)
    for q in torch.nonzero(keep).flatten().tolist():  # interval arithmetic on the three areas
        own_lo, own_hi = own[q] & ~owner_unsure, own[q] | (owner_unsure & near[q])
        fg_lo, fg_hi = fg[q] & ~fg_unsure[q], fg[q] | fg_unsure[q]
        lo_counts = [int(own_lo.sum()), int(fg_lo.sum()), int((own_lo & fg_lo).sum())]
        hi_counts = [int(own_hi.sum()), int(fg_hi.sum()), int((own_hi & fg_hi).sum())]
        hi = min(hi_counts) > 0 and hi_counts[0] >= overlap_threshold * lo_counts[1]
        lo = min(lo_counts) > 0 and lo_counts[0] >= overlap_threshold * hi_counts[1]
        if hi != lo:
            ok_unsure[q] = True
            notes.append(
                f"query {q}: overlap test (own {int(own[q].sum())}, mask {int(fg[q].sum())} pixels, "
                f"ratio >= {overlap_threshold:g}) open within own {lo_counts[0]}..{hi_counts[0]}, "
                f"mask {lo_counts[1]}..{hi_counts[1]}, visible {lo_counts[2]}..{hi_counts[2]}"
            )
    uncertain_q = keep_unsure | ok_unsure
    unsure |= (near & uncertain_q.view(-1, 1, 1)).any(0)
    return unsure, margin, notes


def relabel_segments(ours_ids: torch.Tensor, ours_segs: list[dict], ref_ids: torch.Tensor, ref_segs: list[dict]):
    """Our segment ids renamed to the recorded ones they overlap most (same category and thing flag,
    an assignment); unmatched segments get fresh ids. Returns the relabelled (H, W) map."""
    ours_ids, ref_ids = ours_ids.long().cpu(), ref_ids.long().cpu()
    if not ours_segs or not ref_segs:
        return ours_ids + (ref_ids.max() + 1 if ours_segs else 0) * (ours_ids > 0)
    overlap = np.zeros((len(ours_segs), len(ref_segs)))
    for i, a in enumerate(ours_segs):
        for j, b in enumerate(ref_segs):
            if (a["category_id"], bool(a["isthing"])) == (b["category_id"], bool(b["isthing"])):
                overlap[i, j] = int(((ours_ids == a["id"]) & (ref_ids == b["id"])).sum()) + 1e-3
    rows, cols = linear_sum_assignment(-overlap)
    fresh = int(ref_ids.max()) + 1 + int(ours_ids.max())
    out = torch.zeros_like(ours_ids)
    names = {i: fresh + i for i in range(len(ours_segs))}
    names.update({i: ref_segs[j]["id"] for i, j in zip(rows, cols) if overlap[i, j] > 0})
    for i, seg in enumerate(ours_segs):
        out[ours_ids == seg["id"]] = names[i]
    return out


def panoptic_check(
    name: str,
    ours: tuple[torch.Tensor, list[dict]],
    ref: tuple[torch.Tensor, list[dict]],
    unsure: tuple[torch.Tensor, torch.Tensor, list[str]],
) -> Check:
    """A panoptic map and its segments (``{"id", "category_id", "isthing"}``) against the recorded ones.

    Segment ids are matched as an assignment on overlap; every pixel whose segment differs then must
    be one the measured errors can move (``unsure``: :func:`panoptic_uncertain`'s result).
    """
    unsure, margin, notes = unsure
    relabelled = relabel_segments(ours[0], ours[1], ref[0], ref[1])
    diff = relabelled != ref[0].long().cpu()
    if not diff.any():
        return Check(name, True, "exact (segments matched by overlap)" if ours[1] != ref[1] else "exact")
    return _excused_or_not(
        name,
        diff,
        diff & ~unsure.cpu(),
        margin,
        "pixel(s)",
        "far from any tie",
        "all at decisions within the measured error",
        f"; {'; '.join(notes[:SHOWN])}" if notes else "",
    )


__all__ = [
    "argmax_check",
    "panoptic_check",
    "panoptic_uncertain",
    "relabel_segments",
    "rounding_error",
    "threshold_check",
]


def unpack_masks(packed: torch.Tensor, width: int) -> torch.Tensor:
    """(N, H, ceil(W/8)) uint8 from ``np.packbits(axis=-1)`` -> (N, H, W) bool."""
    bits = np.unpackbits(np.asarray(packed.cpu(), dtype=np.uint8), axis=-1)[..., :width]
    return torch.from_numpy(bits > 0)


def instances_check(
    name: str,
    ours: dict[str, torch.Tensor],
    ref: dict[str, torch.Tensor],
    *,
    err_prob: float,
    err_mask: float,
    boundary: tuple[float, int] | None = None,
) -> Check:
    """Instances (``scores`` (N,), ``classes`` (N,), ``masks`` (N, H, W) bool) matched as an assignment.

    ``ours`` also holds ``mask_probs`` (N, H, W), the sigmoid each mask was thresholded from, and
    ``pair_probs`` (N,), the class probability that ranked it in the top-k. Pairs are found by
    ``linear_sum_assignment`` on ``1 - IoU + |score difference|`` (a class mismatch costs 1000).
    A matched pair may differ at mask pixels within ``err_mask`` of 0.5, and in score by
    ``err_prob + err_mask + flipped / area`` (a pixel at probability ~0.5 entering the mask moves its
    mean by at most ``1 / area``). An unmatched instance is excused only at the top-k boundary
    ``boundary = (k-th probability, pairs of ours within 2 * err_prob of it)``: ours when its class
    probability is within ``2 * err_prob`` of it, the reference's while such pairs of ours remain.
    """
    masks_o, masks_r = ours["masks"].bool().cpu(), ref["masks"].bool().cpu()
    no, nr = len(masks_o), len(masks_r)
    fo, fr = masks_o.flatten(1).float(), masks_r.flatten(1).float()
    inter = fo @ fr.T
    union = fo.sum(1)[:, None] + fr.sum(1)[None] - inter
    iou = (inter / union.clamp(min=1)).numpy()
    so, sr = ours["scores"].float().cpu(), ref["scores"].float().cpu()
    cost = 1 - iou + (so[:, None] - sr[None]).abs().numpy()
    cost += 1000 * (ours["classes"].cpu()[:, None] != ref["classes"].cpu()[None]).numpy()
    rows, cols = linear_sum_assignment(cost) if no and nr else ([], [])
    excused, failed, same_mask = [], [], []
    matched_o, matched_r = set(), set()
    for i, j in zip(rows, cols):
        if cost[i, j] >= 1000:
            continue
        diff = masks_o[i] != masks_r[j]
        margin = (ours["mask_probs"][i].float().cpu() - 0.5).abs()
        far = diff & (margin > err_mask)
        area = max(int(masks_r[j].sum()), 1)
        bound = err_prob + err_mask + int(diff.sum()) / area
        dscore = abs(float(so[i] - sr[j]))
        if far.any() or dscore > bound:
            failed.append(
                f"class {int(ref['classes'][j])} (score {float(sr[j]):.4f}): "
                + (f"mask differs at {_where(far)} far from 0.5" if far.any() else "")
                + (f"score differs by {dscore:.1e} > {bound:.1e}" if dscore > bound else "")
            )
            continue
        matched_o.add(i)
        matched_r.add(j)
        if not diff.any():
            same_mask.append((i, j))
        else:
            pts = _where(diff)
            excused.append(
                f"class {int(ref['classes'][j])} mask at " + _listing(pts, [float(margin[p]) for p in pts], int(diff.sum()) - len(pts))
            )
    extra = [i for i in range(no) if i not in matched_o]
    missing = [j for j in range(nr) if j not in matched_r]
    kth, spare = boundary if boundary is not None else (None, 0)
    for i in extra:
        m = abs(float(ours["pair_probs"][i]) - kth) if kth is not None else float("inf")
        if m <= 2 * err_prob:
            excused.append(f"extra class {int(ours['classes'][i])} at the top-k boundary, margin {m:.1e}")
        else:
            failed.append(f"extra instance of class {int(ours['classes'][i])} (score {float(so[i]):.4f})")
    for j in missing:
        if spare > 0:
            spare -= 1
            excused.append(f"missing class {int(ref['classes'][j])}: ours has a pair within the top-k tie")
        else:
            failed.append(f"no instance matches class {int(ref['classes'][j])} (score {float(sr[j]):.4f})")
    head = f"{no} instances vs the reference's {nr}, matched as an assignment"
    if same_mask:  # scores of identical masks are float outputs: rel. L2 <= REL_TOL as any other
        err = rel_l2(so[[i for i, _ in same_mask]], sr[[j for _, j in same_mask]])
        head += f", scores of the {len(same_mask)} identical masks rel L2 {err:.1e}"
        if err > REL_TOL:
            failed.append(f"scores rel L2 {err:.1e} > {REL_TOL:g}")
    if failed:
        return Check(name, False, f"{head}; {len(failed)} unexcused: " + "; ".join(failed[:SHOWN]))
    return Check(name, True, head + (f"; excused: {'; '.join(excused[:SHOWN])}" if excused else "; identical"))


__all__ += ["instances_check", "unpack_masks"]
