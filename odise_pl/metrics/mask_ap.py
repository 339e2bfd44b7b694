"""Mask AP (COCO instance segmentation) through torchmetrics' ``MeanAveragePrecision(iou_type="segm")``.

The ground-truth instances come from the panoptic annotation (every *thing*
segment is one instance, crowd segments are passed as ``iscrowd`` so that
detections on them are ignored, as COCO does); predictions come from
:func:`odise_pl.models.inference.instance.instance_inference`. Scores are in
percent like PQ: ``mask_AP`` (IoU .50:.95), ``mask_AP50``, ``mask_AP75``,
``mask_APs/m/l``; -100 means "no ground-truth instance" (torchmetrics' -1).

Example:
    >>> import torch
    >>> gt = torch.tensor([[1, 1, 0], [2, 2, 0]])
    >>> segs = [{"id": 1, "category": 0, "iscrowd": 0}, {"id": 2, "category": 1, "iscrowd": 0}]
    >>> target = panoptic_to_instances(gt, segs, torch.tensor([True, False]))
    >>> target["labels"].tolist(), target["masks"].shape
    ([0], torch.Size([1, 2, 3]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["panoptic_to_instances", "mask_ap_metric", "summarize_mask_ap", "MASK_AP_KEYS"]

#: torchmetrics key -> logged name
MASK_AP_KEYS = {
    "map": "mask_AP",
    "map_50": "mask_AP50",
    "map_75": "mask_AP75",
    "map_small": "mask_APs",
    "map_medium": "mask_APm",
    "map_large": "mask_APl",
}


def panoptic_to_instances(gt_panoptic: Tensor, gt_segments: Sequence[dict], is_thing: Tensor) -> dict[str, Tensor]:
    """The thing segments of a panoptic annotation as torchmetrics targets.

    Args:
        gt_panoptic: (H, W) segment ids (0 = VOID).
        gt_segments: ``[{"id", "category", "iscrowd"}]`` (contiguous categories).
        is_thing: (K,) bool.

    Returns:
        ``masks`` (N, H, W) bool, ``labels`` (N,) int64, ``iscrowd`` (N,) int64,
        one per thing segment with at least one pixel.
    """
    things = [s for s in gt_segments if bool(is_thing[int(s["category"])])]
    ids = torch.tensor([int(s["id"]) for s in things], dtype=gt_panoptic.dtype, device=gt_panoptic.device)
    masks = gt_panoptic[None] == ids[:, None, None]  # (N, H, W)
    keep = masks.flatten(1).any(1)
    labels = torch.tensor([int(s["category"]) for s in things], dtype=torch.long, device=gt_panoptic.device)
    crowd = torch.tensor([int(s.get("iscrowd", 0)) for s in things], dtype=torch.long, device=gt_panoptic.device)
    return {"masks": masks[keep], "labels": labels[keep], "iscrowd": crowd[keep]}


def mask_ap_metric(**kwargs):
    """``MeanAveragePrecision(iou_type="segm")`` with the pycocotools backend (COCO's own evaluator)."""
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(iou_type="segm", backend="pycocotools", **kwargs)


def summarize_mask_ap(result: dict) -> dict[str, Tensor]:
    """torchmetrics' output -> ``{mask_AP, mask_AP50, ...}`` in percent (-100 where undefined)."""
    return {name: 100 * result[key].float() for key, name in MASK_AP_KEYS.items() if key in result}
