"""Panoptic post-processing (Mask2Former's panoptic inference) on one image."""

from __future__ import annotations

import torch


def panoptic_inference(
    probs: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor,
    *,
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.8,
) -> tuple[torch.Tensor, list[dict]]:
    """Turn per-query class probabilities and masks into a non-overlapping panoptic map.

    Args:
        probs: (Q, K+1) class probabilities, the last column void / no-object.
        mask_logits: (Q, H, W) mask logits at the output resolution.
        is_thing: (K,) bool, whether each class is a thing (stuff segments of one class are merged).
        object_mask_threshold: queries whose best class score is not above it are dropped.
        overlap_threshold: a query's visible area must be at least this fraction of its own mask.

    Returns:
        ``ids`` (H, W) int64 segment ids (0 = no segment) and the list of segments
        ``{"id", "category", "isthing", "score", "area"}`` (ids 1..S, in order).
    """
    num_classes = probs.shape[-1] - 1
    scores, labels = probs.max(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    h, w = mask_logits.shape[-2:]
    ids = torch.zeros((h, w), dtype=torch.int64, device=mask_logits.device)
    segments: list[dict] = []
    if not bool(keep.any()):
        return ids, segments
    scores, labels, masks = scores[keep], labels[keep], mask_logits[keep].sigmoid()
    owner = (scores.view(-1, 1, 1) * masks).argmax(0)  # (H, W) index into kept queries
    own = owner.unsqueeze(0) == torch.arange(len(scores), device=owner.device).view(-1, 1, 1)
    fg = masks >= 0.5
    visible = own & fg  # (Qk, H, W)
    visible_area = visible.flatten(1).sum(-1)
    own_area = own.flatten(1).sum(-1)
    mask_area = fg.flatten(1).sum(-1)
    ok = (own_area > 0) & (mask_area > 0) & (visible_area > 0)
    ok &= (own_area.double() / mask_area.clamp(min=1).double()) >= overlap_threshold  # as the reference's ratio
    stuff_ids: dict[int, int] = {}
    for q in torch.nonzero(ok).flatten().tolist():  # at most Q iterations
        cls = int(labels[q])
        thing = bool(is_thing[cls])
        if not thing and cls in stuff_ids:
            seg_id = stuff_ids[cls]
        else:
            seg_id = len(segments) + 1
            segments.append({"id": seg_id, "category": cls, "isthing": thing, "score": float(scores[q]), "area": 0})
            if not thing:
                stuff_ids[cls] = seg_id
        ids[visible[q]] = seg_id
    areas = torch.bincount(ids.flatten(), minlength=len(segments) + 1).tolist()
    for seg in segments:
        seg["area"] = int(areas[seg["id"]])
    return ids, segments
