"""Semantic post-processing: sum over queries of class probability x mask probability."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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
        out[start : start + chunk] = (flat[:, start : start + chunk].sigmoid().t() @ cls).argmax(-1)
    return out.view(h, w)


def semantic_argmax_scores_resized(
    probs: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    image_size: Sequence[int],
    output_size: Sequence[int],
    padded: Sequence[int],
    class_chunk: int = 32,
) -> torch.Tensor:
    """The semantic map in FC-CLIP's order for semantic-only sets: class scores at the padded input size,
    then the (K, H, W) score map cropped and resized to the output size, then the argmax.

    (``fcclip.py:429-433`` of bytedance/fc-clip: ``sem_seg_postprocess`` after ``semantic_inference`` when
    panoptic and instance output are off.) :func:`semantic_argmax` on masks already at the output size is
    the other order (ODISE's, and FC-CLIP's when panoptic or instance output is on). Classes are scored
    ``class_chunk`` at a time, so memory is ``class_chunk x H_out x W_out``, not K of them.

    Args:
        probs: (Q, K+1) class probabilities (void last, dropped).
        mask_logits: (Q, h, w) mask logits at the decoder's resolution.
        image_size: (H_valid, W_valid) inside the padded input.
        output_size: (H_out, W_out).
        padded: (H_pad, W_pad) of the input batch.

    Returns:
        (H_out, W_out) int64 class indices (the first of equal scores).
    """
    m = F.interpolate(mask_logits[None].float(), size=tuple(int(s) for s in padded), mode="bilinear", align_corners=False)[0]
    m = m[:, : int(image_size[0]), : int(image_size[1])].sigmoid()  # the crop commutes with the per-pixel sum
    cls = probs[:, :-1].float()
    size = tuple(int(s) for s in output_size)
    best = torch.full(size, -torch.inf, device=m.device)
    index = torch.zeros(size, dtype=torch.int64, device=m.device)
    for start in range(0, cls.shape[1], class_chunk):
        scores = torch.einsum("qk,qhw->khw", cls[:, start : start + class_chunk], m)
        scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
        top, arg = scores.max(0)
        better = top > best
        best = torch.where(better, top, best)
        index = torch.where(better, arg + start, index)
    return index
