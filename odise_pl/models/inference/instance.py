"""Instance outputs as Mask2Former's ``instance_inference``: top-k (query, class) pairs, then things."""

from __future__ import annotations

import torch


def instance_inference(
    probs: torch.Tensor, mask_logits: torch.Tensor, is_thing: torch.Tensor, *, topk: int = 100
) -> dict[str, torch.Tensor]:
    """Mask2Former's instance inference on one image (``MaskFormer.instance_inference``, panoptic on).

    The ``topk`` best (query, class) scores are taken over **all** Q x K pairs first (void excluded),
    and only then are the pairs of stuff classes dropped, so fewer than ``topk`` instances remain when
    stuff pairs rank high.  Each instance's score is its class probability times its mask score, the
    mean sigmoid inside its binarised mask (``sum(sigmoid * binary) / (area + 1e-6)``).

    Args:
        probs: (Q, K+1) class probabilities (last column void).
        mask_logits: (Q, H, W) mask logits.
        is_thing: (K,) bool; only thing classes become instances.
        topk: the number of (query, class) pairs ranked (the reference's ``test_topk_per_image``, 100).

    Returns:
        ``masks`` (N, H, W) bool, ``scores`` (N,), ``labels`` (N,) long, N <= topk, by descending class score.
    """
    k = probs.shape[1] - 1
    flat = probs[:, :-1].flatten()  # (Q*K,), index q * K + c
    top_scores, top_idx = flat.topk(min(topk, flat.numel()))
    query, labels = top_idx // k, top_idx % k
    keep = is_thing.to(device=labels.device, dtype=torch.bool)[labels]
    query, labels, top_scores = query[keep], labels[keep], top_scores[keep]
    masks = mask_logits[query]
    binary = masks > 0
    mask_score = (masks.sigmoid() * binary).flatten(1).sum(-1) / (binary.flatten(1).sum(-1) + 1e-6)
    return {"masks": binary, "scores": top_scores * mask_score, "labels": labels}
