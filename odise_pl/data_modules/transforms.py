"""Geometric transforms of an image and its panoptic id map, and per-image targets.

* :class:`LargeScaleJitter` (training, the reference recipe): random horizontal flip,
  resize so that the image fits ``scale * crop_size`` (``scale ~ U[min_scale, max_scale]``,
  aspect kept, as detectron2's ``ResizeScale``), random crop of at most
  ``crop_size x crop_size``, then pad to exactly that size (image ``pad_value``, 128 as detectron2's
  ``FixedSizeCrop``; ids VOID, the ignore label).
* :class:`ResizeShortestEdge` (evaluation): short side ``S``, long side at most ``max``.

Images are resized bilinearly (PIL), id maps by nearest neighbour with the same
pixel-centre convention, so masks stay aligned with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 image to (height, width, 3)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_nearest(ids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) id map (pixel centres, like PIL's NEAREST)."""
    h, w = ids.shape
    if (h, w) == (height, width):
        return ids
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return ids[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class JitterParams:
    """One draw of :class:`LargeScaleJitter`: flip, resized size, crop offset."""

    flip: bool
    height: int  # size after the resize, before the crop
    width: int
    top: int
    left: int


@dataclass
class LargeScaleJitter:
    """Large-scale jitter: flip, random rescale of the crop size, fixed-size crop with padding.

    Args:
        crop_size: side of the square output.
        min_scale: smallest scale of ``crop_size`` the image is fitted into.
        max_scale: largest scale.
        flip: random horizontal flip with probability 0.5.
        pad_value: grey level of the padded image pixels (detectron2's ``FixedSizeCrop`` default, 128,
            as the reference); the padded ids are VOID (ignored by the losses).
    """

    crop_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip: bool = True
    pad_value: int = 128

    def sample(self, rng: np.random.Generator, height: int, width: int) -> JitterParams:
        """Draw the parameters for an image of size (height, width)."""
        flip = bool(self.flip and rng.random() < 0.5)
        target = rng.uniform(self.min_scale, self.max_scale) * self.crop_size
        scale = min(target / height, target / width)
        new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
        top = int(rng.integers(0, new_h - self.crop_size + 1)) if new_h > self.crop_size else 0
        left = int(rng.integers(0, new_w - self.crop_size + 1)) if new_w > self.crop_size else 0
        return JitterParams(flip, new_h, new_w, top, left)

    def apply(self, params: JitterParams, image: np.ndarray, ids: np.ndarray):
        """Apply drawn parameters.

        Args:
            params: from :meth:`sample`.
            image: (H, W, 3) uint8.
            ids: (H, W) int64 segment ids, 0 = VOID.

        Returns:
            image (crop, crop, 3) uint8, ids (crop, crop) int64, and the valid (h, w) in
            the top-left corner (the rest is padding: image ``pad_value``, ids VOID).
        """
        if params.flip:
            image, ids = image[:, ::-1], ids[:, ::-1]
        image = resize_image(np.ascontiguousarray(image), params.height, params.width)
        ids = resize_nearest(ids, params.height, params.width)
        c = self.crop_size
        image = image[params.top : params.top + c, params.left : params.left + c]
        ids = ids[params.top : params.top + c, params.left : params.left + c]
        valid = image.shape[:2]
        out_image = np.full((c, c, 3), self.pad_value, np.uint8)
        out_ids = np.zeros((c, c), np.int64)
        out_image[: valid[0], : valid[1]] = image
        out_ids[: valid[0], : valid[1]] = ids
        return out_image, out_ids, (int(valid[0]), int(valid[1]))

    def __call__(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator):
        """Draw and apply; see :meth:`apply`."""
        return self.apply(self.sample(rng, *ids.shape), image, ids)


@dataclass
class ResizeShortestEdge:
    """Evaluation resize: short side ``short_side``, long side at most ``max_long_side``."""

    short_side: int = 1024
    max_long_side: int = 2560

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.short_side / min(height, width)
        if max(height, width) * scale > self.max_long_side:
            scale = self.max_long_side / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def __call__(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator | None = None):
        """(H, W, 3) uint8 and (H, W) ids -> resized image, ids and their (h, w)."""
        h, w = self.output_size(*ids.shape)
        return resize_image(image, h, w), resize_nearest(ids, h, w), (h, w)


def build_targets(ids: np.ndarray, segments: list[dict], image_id: int | str) -> dict:
    """Per-image training targets from an id map.

    Args:
        ids: (H, W) int64 segment ids after the transform (0 = VOID / padding).
        segments: dicts ``{id, category, isthing, iscrowd}`` (contiguous ``category``).
        image_id: the dataset's image id (an int, or a string such as ADE20K's file stems).

    Returns:
        ``masks`` bool (N, H, W), ``labels`` long (N,), ``is_thing`` bool (N,), ``iscrowd``
        bool (N,), ``image_id`` int (or str); segments with no pixel left are dropped.
    """
    seg_ids = np.asarray([s["id"] for s in segments], np.int64)
    masks = ids[None] == seg_ids[:, None, None]  # (N, H, W)
    keep = masks.reshape(len(segments), -1).any(1) if len(segments) else np.zeros(0, bool)
    kept = [s for s, k in zip(segments, keep) if k]
    return {
        "masks": torch.from_numpy(masks[keep]),
        "labels": torch.tensor([s["category"] for s in kept], dtype=torch.long),
        "is_thing": torch.tensor([bool(s["isthing"]) for s in kept], dtype=torch.bool),
        "iscrowd": torch.tensor([bool(s["iscrowd"]) for s in kept], dtype=torch.bool),
        "image_id": image_id if isinstance(image_id, str) else int(image_id),
    }


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
