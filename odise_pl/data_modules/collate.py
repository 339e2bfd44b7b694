"""Batching of per-image items into the batch dict of ``docs/architecture.md``.

An item (what :class:`~odise_pl.data_modules.coco_panoptic.CocoPanopticDataset` returns):
``image`` uint8 (3, h, w), ``image_size`` (valid h, w), ``target`` dict (``masks`` bool
(N, h, w), ``labels``, ``is_thing``, ``iscrowd``, ``image_id``; evaluation items add
``orig_size``, ``gt_panoptic``, ``gt_segments``, ``gt_semantic``, ``file_name``) and
``captions`` (list of str, or None when the dataset has no captions).  ``None`` items
(skipped bad samples) are dropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class PanopticCollate:
    """Pads images and masks to a common size, a multiple of ``size_divisibility``.

    Args:
        size_divisibility: the padded H and W are multiples of this (the backbone's).

    Returns (when called on a list of items):
        ``images`` uint8 (B, 3, H, W) zero-padded; ``image_sizes`` long (B, 2) valid (h, w);
        ``targets`` list of B dicts with masks padded to (N, H, W); ``captions`` list of B
        lists of str, only when the items carry captions.
    """

    def __init__(self, size_divisibility: int = 32) -> None:
        self.size_divisibility = max(1, int(size_divisibility))

    def __call__(self, items: list[dict | None]) -> dict:
        items = [item for item in items if item is not None]
        d = self.size_divisibility
        if not items:
            return {"images": torch.zeros(0, 3, d, d, dtype=torch.uint8), "image_sizes": torch.zeros(0, 2, dtype=torch.long), "targets": []}
        height = math.ceil(max(it["image"].shape[1] for it in items) / d) * d
        width = math.ceil(max(it["image"].shape[2] for it in items) / d) * d
        images = torch.zeros(len(items), 3, height, width, dtype=torch.uint8)
        targets = []
        for i, it in enumerate(items):
            h, w = it["image"].shape[1:]
            images[i, :, :h, :w] = it["image"]
            target = dict(it["target"])
            target["masks"] = F.pad(target["masks"], (0, width - w, 0, height - h))
            targets.append(target)
        batch = {
            "images": images,
            "image_sizes": torch.tensor([list(it["image_size"]) for it in items], dtype=torch.long),
            "targets": targets,
        }
        if any(it.get("captions") is not None for it in items):
            batch["captions"] = [list(it.get("captions") or []) for it in items]
        return batch
