"""Colour panoptic maps and draw labelled overlays (TensorBoard pictures, ``odise-pl predict``)."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def category_color(category: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per class index (golden-ratio hues)."""
    h = (category * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def segment_color(category: int, segment_id: int, isthing: bool) -> tuple[int, int, int]:
    """Things get a per-instance brightness jitter of their class colour; stuff keeps it."""
    base = np.array(category_color(category), dtype=np.int32)
    if isthing:
        base = base + ((segment_id * 37) % 61 - 30)
    return tuple(int(v) for v in np.clip(base, 0, 255))


def colorize_panoptic(ids: torch.Tensor | np.ndarray, segments: list[dict]) -> np.ndarray:
    """(H,W) segment ids + segments (``id``, ``category``, ``isthing``) -> (H,W,3) uint8; 0 stays black."""
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    palette = np.zeros((int(ids.max(initial=0)) + 1, 3), dtype=np.uint8)
    for seg in segments:
        if seg["id"] < len(palette):
            palette[seg["id"]] = segment_color(seg["category"], seg["id"], bool(seg.get("isthing", True)))
    return palette[ids]


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a colour map over an (H,W,3) uint8 image; unlabeled (black) pixels keep the image."""
    out = image.astype(np.float32)
    mask = color.any(-1, keepdims=True)
    out = np.where(mask, (1 - alpha) * out + alpha * color.astype(np.float32), out)
    return out.clip(0, 255).astype(np.uint8)


def draw_labels(image: np.ndarray, ids: torch.Tensor | np.ndarray, segments: list[dict], names: list[str]) -> Image.Image:
    """Write each segment's class name at the centre of its largest area."""
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for seg in segments:
        ys, xs = np.nonzero(ids == seg["id"])
        if len(ys) == 0:
            continue
        y, x = int(np.median(ys)), int(np.median(xs))
        text = names[seg["category"]]
        box = draw.textbbox((x, y), text, font=font, anchor="mm")
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x, y), text, fill=(255, 255, 255), font=font, anchor="mm")
    return pil
