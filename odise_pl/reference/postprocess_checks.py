"""The post-processing's discrete outputs (semantic, panoptic, instances) against the recorded ones.

Each decision is checked by :mod:`~odise_pl.reference.discrete`'s tie rule with errors measured on
this input: ``err_prob`` = max |our class probabilities - softmax(recorded ``final.mask_cls``)|,
``err_mask`` = max |sigmoid(our ``final.mask_pred``) - sigmoid(recorded)|, and for the semantic
argmax the max |difference| of the (K, H, W) score volume (the recorded ``final.sem_seg``, or our
:func:`semantic_inference` on the recorded inputs where it was not stored). The same functions run
again on the reference's own ``final.mask_cls`` / ``final.mask_pred``; there the inputs are
identical and the only error is float32 rounding (:func:`~odise_pl.reference.discrete.rounding_error`).
"""

from __future__ import annotations

import torch

from odise_pl.models.inference.instance import instance_inference
from odise_pl.models.inference.panoptic import panoptic_inference
from odise_pl.models.inference.semantic import semantic_inference
from odise_pl.reference.checks import Check, max_abs
from odise_pl.reference.discrete import (
    argmax_check,
    instances_check,
    panoptic_check,
    panoptic_uncertain,
    rounding_error,
    unpack_masks,
)

PANOPTIC_MAPS = (("final.panoptic_seg", ""), ("final.panoptic_seg_overlap0", "_overlap0"))


def measured_errors(got: dict, tensors: dict, prefix: str) -> dict[str, float]:
    """max |ours - reference| of the class probabilities and of the mask probabilities.

    Where the reference did not store ``final.mask_pred`` (the caption fixture's second input), the
    mask error is bounded by the decoder's low-resolution ``predictor.pred_masks`` it is resized
    from: bilinear resizing takes convex combinations (no larger max error) and the sigmoid's slope
    is at most 1/4. A quantity with no recorded input gets error 0: exact agreement is required.
    """
    errs = {"prob": 0.0, "mask": 0.0}
    if f"{prefix}/final.mask_cls" in tensors:
        ref = tensors[f"{prefix}/final.mask_cls"].float().softmax(-1)
        errs["prob"] = max_abs(got["final.mask_cls.log_softmax"].exp(), ref)
    if f"{prefix}/final.mask_pred" in tensors:
        ref = tensors[f"{prefix}/final.mask_pred"].float()
        errs["mask"] = max_abs(got["final.mask_pred"].sigmoid(), ref.sigmoid())
    elif f"{prefix}/predictor.pred_masks" in tensors:
        errs["mask"] = max_abs(got["predictor.pred_masks"], tensors[f"{prefix}/predictor.pred_masks"]) / 4
    probs = got["final.mask_cls.log_softmax"].exp()
    if f"{prefix}/final.sem_seg" in tensors:
        errs["sem"] = max_abs(got["final.sem_seg"], tensors[f"{prefix}/final.sem_seg"])
    else:  # |d sum_q p_qk s_q| <= sum_q |d p_qk| + max_k sum_q p_qk * |d s|
        errs["sem"] = probs.shape[0] * errs["prob"] + float(probs[:, :-1].sum(0).max()) * errs["mask"]
    return errs


def _instance_inputs(probs, masks, is_thing, topk: int, err_prob: float) -> tuple[dict, tuple[float, int] | None]:
    """Each instance's mask probabilities and class probability (as ``instance_inference`` ranks them),
    and the top-k boundary ``(k-th probability, thing pairs outside the top-k within 2 x err_prob)``."""
    k = probs.shape[1] - 1
    flat = probs[:, :-1].flatten()
    scores, idx = flat.topk(min(topk, flat.numel()))
    thing = is_thing.to(dtype=torch.bool, device=idx.device)[idx % k]
    extra = {"mask_probs": masks[idx // k][thing].sigmoid(), "pair_probs": scores[thing]}
    if flat.numel() <= topk:
        return extra, None
    kth = float(scores[-1])
    outside = torch.ones_like(flat, dtype=torch.bool)
    outside[idx] = False
    pair_thing = is_thing.to(dtype=torch.bool, device=flat.device).repeat(probs.shape[0])
    spare = int((outside & pair_thing & ((flat - kth).abs() <= 2 * err_prob)).sum())
    return extra, (kth, spare)


def check_postprocess(model, probs, masks, sem, tensors: dict, info: dict, prefix: str, errs: dict, label: str = "") -> list[Check]:
    """All discrete checks of one input, for post-processing inputs ``probs`` (Q, K+1) and ``masks``
    (Q, H, W) logits, and their semantic volume ``sem`` (K, H, W)."""
    cfg, checks = model.inference_cfg, []
    is_thing = model.eval_is_thing.cpu()
    probs, masks = probs.float().cpu(), masks.float().cpu()
    key = f"{prefix}/final.sem_seg_argmax"
    if key in tensors:
        checks.append(argmax_check(key + label, sem, tensors[key], errs["sem"]))
    for name, suffix in PANOPTIC_MAPS:
        key = f"{prefix}/{name}"
        if key not in tensors:
            continue
        overlap = cfg.overlap_threshold if not suffix else 0.0
        ids, segs = panoptic_inference(probs, masks, is_thing, object_mask_threshold=cfg.object_mask_threshold, overlap_threshold=overlap)
        ours_segs = [{"id": s["id"], "category_id": s["category"], "isthing": s["isthing"]} for s in segs]
        want = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": bool(s["isthing"])} for s in info.get(f"segments_info{suffix}", [])
        ]
        unsure = panoptic_uncertain(
            probs,
            masks,
            object_mask_threshold=cfg.object_mask_threshold,
            overlap_threshold=overlap,
            err_prob=errs["prob"],
            err_mask=errs["mask"],
        )
        check = panoptic_check(key + label, (ids, ours_segs), (tensors[key], want), unsure)
        checks.append(check)
        same = ours_segs == want
        detail = "identical" if same else f"{ours_segs} vs {want}: {'as' if check.ok else 'not as'} the map allows"
        checks.append(Check(f"{prefix}/segments_info{suffix}{label}", same or check.ok, detail))
    key = f"{prefix}/final.instances"
    if f"{key}.scores" in tensors:
        inst = instance_inference(probs, masks, is_thing, topk=cfg.instance_topk)
        extra, boundary = _instance_inputs(probs, masks, is_thing, cfg.instance_topk, errs["prob"])
        ours = {"scores": inst["scores"], "classes": inst["labels"], "masks": inst["masks"], **extra}
        ref = {
            "scores": tensors[f"{key}.scores"],
            "classes": tensors[f"{key}.pred_classes"],
            "masks": unpack_masks(tensors[f"{key}.pred_masks_packbits"], masks.shape[-1]),
        }
        checks.append(instances_check(key + label, ours, ref, err_prob=errs["prob"], err_mask=errs["mask"], boundary=boundary))
    return checks


def discrete_checks(model, got: dict, tensors: dict, info: dict, prefix: str) -> list[Check]:
    """Our outputs against the recorded ones, then our post-processing on the reference's own inputs."""
    errs = measured_errors(got, tensors, prefix)
    probs, masks = got["final.mask_cls.log_softmax"].exp(), got["final.mask_pred"]
    have_ref = f"{prefix}/final.mask_cls" in tensors and f"{prefix}/final.mask_pred" in tensors
    checks = check_postprocess(model, probs, masks, got["final.sem_seg"], tensors, info, prefix, errs)
    if have_ref:
        probs = tensors[f"{prefix}/final.mask_cls"].float().softmax(-1)
        masks = tensors[f"{prefix}/final.mask_pred"].float()
        sem = semantic_inference(probs, masks)
        rounding = {
            "prob": rounding_error(probs, probs.shape[-1] + 2),  # exp, a sum over K+1, a division
            "mask": rounding_error(masks.sigmoid(), 4),
            "sem": rounding_error(sem, probs.shape[0] + 2),  # a sum over Q products
        }
        checks += check_postprocess(model, probs, masks, sem, tensors, info, prefix, rounding, " (on the reference's mask_cls/mask_pred)")
    return checks


__all__ = ["check_postprocess", "discrete_checks", "measured_errors"]
