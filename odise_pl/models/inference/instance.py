"""Instance post-processing: top-k (query, class) pairs scored by class x mask confidence."""

from __future__ import annotations

import torch


def instance_inference(probs: torch.Tensor, mask_logits: torch.Tensor, is_thing: torch.Tensor, *,
                       topk: int = 100) -> dict[str, torch.Tensor]:
    """Mask2Former's instance inference on one image.

    Args:
        probs: (Q, K+1) class probabilities (last column void).
        mask_logits: (Q, H, W) mask logits.
        is_thing: (K,) bool; only thing classes become instances.
        topk: number of instances kept.

    Returns:
        ``masks`` (N, H, W) bool, ``scores`` (N,), ``labels`` (N,) long, N <= topk.
    """
    q, k1 = probs.shape
    k = k1 - 1
    scores = probs[:, :-1].clone()
    scores[:, ~is_thing.to(torch.bool)] = 0.0
    flat = scores.flatten()
    top_scores, top_idx = flat.topk(min(topk, flat.numel()))
    query, labels = top_idx // k, top_idx % k
    keep = top_scores > 0
    query, labels, top_scores = query[keep], labels[keep], top_scores[keep]
    masks = mask_logits[query]
    binary = masks > 0
    mask_prob = masks.sigmoid()
    mask_score = (mask_prob * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1)
    return {"masks": binary, "scores": top_scores * mask_score, "labels": labels}
