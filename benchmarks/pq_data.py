"""Generated COCO panoptic folders for the PQ benchmarks (numpy + PIL only, no torch).

Random 24-bit segment ids, 133 categories (80 things), stuff blocks + thing rectangles,
~5 % crowd, 2 % VOID speckle; the prediction is the GT shifted by up to 6 px with 10 % of
the categories changed. Used by ``bench_pq.py`` and ``cli_startup.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CATEGORIES = 133  # COCO panoptic: 80 things, 53 stuff
CATEGORIES = [{"id": i + 1, "name": f"c{i}", "isthing": int(i < 80)} for i in range(NUM_CATEGORIES)]


def random_pair(rng: np.random.Generator, size: int, segments: int):
    """A GT (stuff blocks, thing rectangles, some crowd, VOID) and a noisy prediction."""
    labels = np.zeros((size, size), dtype=np.int64)
    cats, crowd = [], []
    for i in range(segments):
        y0, x0 = rng.integers(0, size, 2)
        extent = size // 2 if i < 8 else size // 8
        y1, x1 = y0 + rng.integers(4, extent), x0 + rng.integers(4, extent)
        labels[y0:y1, x0:x1] = i + 1
        cats.append(int(rng.integers(80, NUM_CATEGORIES)) if i < 8 else int(rng.integers(0, 80)))
        crowd.append(int(i >= 8 and rng.random() < 0.05))
    labels[rng.random(labels.shape) < 0.02] = 0  # VOID speckle
    gt_id = rng.choice(2**24 - 1, size=segments, replace=False) + 1
    pred_id = rng.choice(2**24 - 1, size=segments, replace=False) + 1
    gt = np.where(labels > 0, gt_id[labels - 1], 0)
    shifted = np.roll(labels, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    pred = np.where(shifted > 0, pred_id[shifted - 1], 0)
    pred_cats = [c if rng.random() > 0.1 else int(rng.integers(0, NUM_CATEGORIES)) for c in cats]
    gt_segs = [
        {"id": int(gt_id[i]), "category_id": cats[i] + 1, "iscrowd": crowd[i], "area": int((labels == i + 1).sum())}
        for i in range(segments)
        if (labels == i + 1).any()
    ]
    pred_segs = [
        {"id": int(pred_id[i]), "category_id": pred_cats[i] + 1, "iscrowd": 0} for i in range(segments) if (shifted == i + 1).any()
    ]
    return gt, gt_segs, pred, pred_segs


def write_dataset(root: Path, images: int, size: int, segments: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt_anns, pred_anns = [], []
    for folder in ("gt", "pred"):
        (root / folder).mkdir()
    for image_id in range(1, images + 1):
        gt, gt_segs, pred, pred_segs = random_pair(rng, size, segments)
        name = f"{image_id:012d}.png"
        for folder, ids in (("gt", gt), ("pred", pred)):
            rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / folder / name)
        gt_anns.append({"image_id": image_id, "file_name": name, "segments_info": gt_segs})
        pred_anns.append({"image_id": image_id, "file_name": name, "segments_info": pred_segs})
    for folder, anns in (("gt", gt_anns), ("pred", pred_anns)):
        (root / f"{folder}.json").write_text(json.dumps({"annotations": anns, "categories": CATEGORIES}))
