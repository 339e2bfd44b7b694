"""Semantic post-processing: sum over queries of class probability x mask probability."""

from __future__ import annotations

import torch


def semantic_inference(probs: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """(Q, K+1) probabilities and (Q, H, W) mask logits -> (K, H, W) class scores (void dropped).

    The semantic map is ``scores.argmax(0)``.
    """
    return torch.einsum("qk,qhw->khw", probs[:, :-1], mask_logits.sigmoid())
