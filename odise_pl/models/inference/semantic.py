"""Semantic post-processing: sum over queries of class probability x mask probability."""

from __future__ import annotations

import torch


def semantic_inference(probs: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """(Q, K+1) probabilities and (Q, H, W) mask logits -> (K, H, W) class scores (void dropped).

    The semantic map is ``scores.argmax(0)`` (:func:`semantic_argmax` computes it without the
    (K, H, W) volume).
    """
    return torch.einsum("qk,qhw->khw", probs[:, :-1], mask_logits.sigmoid())


def semantic_argmax(probs: torch.Tensor, mask_logits: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """The semantic map ``argmax_k sum_q p_qk sigmoid(m_q)`` without the (K, H, W) score volume.

    Args:
        probs: (Q, K+1) class probabilities (void last, dropped).
        mask_logits: (Q, H, W) mask logits.
        chunk: pixels scored at a time (memory ``chunk x K``).

    Returns:
        (H, W) int64 class indices.

    Example:
        >>> probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
        >>> masks = torch.tensor([[[4.0, -4.0]], [[-4.0, 4.0]]])          # (Q=2, H=1, W=2)
        >>> semantic_argmax(probs, masks).tolist()
        [[0, 1]]
        >>> torch.equal(semantic_argmax(probs, masks, chunk=1), semantic_inference(probs, masks).argmax(0))
        True
    """
    q, h, w = mask_logits.shape
    cls = probs[:, :-1].to(mask_logits.dtype)  # (Q, K)
    flat = mask_logits.reshape(q, -1)
    out = torch.empty(h * w, dtype=torch.int64, device=mask_logits.device)
    for start in range(0, h * w, chunk):
        out[start:start + chunk] = (flat[:, start:start + chunk].sigmoid().t() @ cls).argmax(-1)
    return out.view(h, w)
