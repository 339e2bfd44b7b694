"""Test helpers: random COCO-format panoptic maps, perturbed predictions, and the reference API.

Maps are numpy int64 (H, W) id maps with segment lists ``[{"id", "category", "iscrowd"}]``
(``category`` contiguous). :func:`write_panoptic` writes them as a COCO panoptic
JSON + PNG folder, and :func:`reference_pq` scores such folders with the COCO
panoptic API (``panopticapi``), one process, no multiprocessing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

# Non-contiguous original ids on purpose; the first four are things.
CATEGORIES = [{"id": cid, "name": f"cat{cid}", "isthing": int(i < 4)} for i, cid in enumerate([1, 3, 4, 10, 20, 21, 30])]
IS_THING = [bool(c["isthing"]) for c in CATEGORIES]
THINGS = [i for i, t in enumerate(IS_THING) if t]
STUFF = [i for i, t in enumerate(IS_THING) if not t]


def _fresh_ids(rng: np.random.Generator, n: int, large: bool, taken=()) -> list[int]:
    """n distinct ids > 0, small (< 1000) or COCO-like RGB ids (< 2**24)."""
    high = 2**24 if large else 1000
    out: list[int] = []
    taken = set(taken) | {0}
    while len(out) < n:
        value = int(rng.integers(1, high))
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def _shape_mask(rng: np.random.Generator, h: int, w: int, scale: int = 3) -> np.ndarray:
    """A random rectangle or ellipse with radii up to size / scale, (H, W) bool."""
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    ry, rx = rng.integers(2, max(3, h // scale)), rng.integers(2, max(3, w // scale))
    yy, xx = np.ogrid[:h, :w]
    if rng.random() < 0.5:
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_panoptic(rng: np.random.Generator, h: int = 48, w: int = 64, large_ids: bool | None = None):
    """A random GT: stuff bands, thing shapes (some crowd), VOID patches.

    Returns:
        (ids (H, W) int64, segments); may list a segment without pixels and
        several crowd segments of one category.
    """
    large = bool(rng.random() < 0.5) if large_ids is None else large_ids
    cats: list[int] = []
    crowd: list[int] = []
    ids = np.zeros((h, w), dtype=np.int64)
    labels = np.zeros((h, w), dtype=np.int64)  # index into cats, +1
    bounds = np.sort(rng.integers(0, h, size=int(rng.integers(1, 4))))
    for top in [0, *bounds.tolist()]:
        cats.append(int(rng.choice(STUFF)))
        crowd.append(0)
        labels[top:] = len(cats)
    for _ in range(int(rng.integers(2, 9))):
        cats.append(int(rng.choice(THINGS)))
        crowd.append(int(rng.random() < 0.2))
        labels[_shape_mask(rng, h, w)] = len(cats)
    for _ in range(int(rng.integers(0, 4))):  # VOID patches
        labels[_shape_mask(rng, h, w, scale=8)] = 0
    seg_ids = _fresh_ids(rng, len(cats), large)
    ids = np.where(labels > 0, np.asarray([0, *seg_ids])[labels], 0)
    present = set(np.unique(ids).tolist())
    segments = [
        {"id": sid, "category": cat, "iscrowd": cr}
        for sid, cat, cr in zip(seg_ids, cats, crowd)
        if sid in present or rng.random() < 0.3  # sometimes keep a listed GT segment without pixels
    ]
    return ids, segments


def _categories_of(segments) -> dict[int, int]:
    return {s["id"]: s["category"] for s in segments}


def perturb(rng: np.random.Generator, gt_ids: np.ndarray, gt_segments: list[dict], strength: int = 3, num_classes: int = len(CATEGORIES)):
    """A prediction made from the GT by random edits.

    Edits: fresh ids, dropped / merged / split / shifted / relabelled segments,
    crowd regions cut into instances, VOID filled, pixel noise, whole-map roll.

    Returns:
        (pred_ids (H, W) int64, pred_segments [{"id", "category"}]).
    """
    h, w = gt_ids.shape
    cat_of = _categories_of(gt_segments)
    old = [s["id"] for s in gt_segments]
    new = _fresh_ids(rng, len(old), large=bool(rng.random() < 0.5))
    keys, values = np.asarray([0, *old]), np.asarray([0, *new], dtype=np.int64)
    order = np.argsort(keys)
    pred = values[order][np.searchsorted(keys[order], gt_ids)]
    cat = {n: cat_of[o] for o, n in zip(old, new)}
    for _ in range(strength):
        live = [i for i in np.unique(pred).tolist() if i != 0]
        if not live:
            break
        a, b = int(rng.choice(live)), int(rng.choice(live))
        edit = rng.integers(0, 9)
        if edit == 0:  # drop
            pred[pred == a] = 0
        elif edit == 1:  # merge a into b
            pred[pred == a] = b
        elif edit == 2:  # split a by a vertical or horizontal cut
            ys, xs = np.nonzero(pred == a)
            cut = (xs < np.median(xs)) if rng.random() < 0.5 else (ys < np.median(ys))
            (nid,) = _fresh_ids(rng, 1, False, taken=cat)
            pred[ys[cut], xs[cut]] = nid
            cat[nid] = cat[a]
        elif edit == 3:  # shift one segment
            mask = np.roll(pred == a, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
            pred[pred == a] = 0
            pred[mask] = a
        elif edit == 4:  # relabel
            cat[a] = int(rng.integers(0, num_classes))
        elif edit == 5:  # predict over VOID: give VOID pixels to a or to a new segment
            pred[(gt_ids == 0) & (rng.random(gt_ids.shape) < 0.8)] = a
        elif edit == 6:  # cut crowd regions into pieces of the crowd's category
            for seg in gt_segments:
                if seg["iscrowd"]:
                    ys, xs = np.nonzero(gt_ids == seg["id"])
                    if ys.size:
                        (nid,) = _fresh_ids(rng, 1, False, taken=cat)
                        part = xs < np.quantile(xs, rng.random())
                        pred[ys[part], xs[part]] = nid
                        cat[nid] = seg["category"]
        elif edit == 7:  # pixel noise
            noise = rng.random(gt_ids.shape) < 0.05
            pred[noise] = rng.choice([0, *live], size=int(noise.sum()))
        else:  # roll the whole map
            pred = np.roll(pred, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    present = [i for i in np.unique(pred).tolist() if i != 0]
    return pred, [{"id": i, "category": cat[i]} for i in present]


def independent_prediction(rng: np.random.Generator, h: int, w: int):
    """A prediction unrelated to the GT (random panoptic map, no crowd, no empty segments)."""
    ids, segments = random_panoptic(rng, h, w)
    present = set(np.unique(ids).tolist())
    return ids, [{"id": s["id"], "category": s["category"]} for s in segments if s["id"] in present]


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8, id = R + 256 G + 256^2 B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def write_panoptic(
    root: Path, name: str, images: list[tuple[int, np.ndarray, list[dict]]], categories: list[dict] = CATEGORIES
) -> tuple[Path, Path]:
    """Write ``root/name.json`` and ``root/name/*.png`` in COCO panoptic format.

    Args:
        images: (image_id, ids, segments with contiguous ``category``; ``area``, when a segment
            has one, is written as its JSON area, else its pixel count is).
        categories: the JSON ``categories``; contiguous index i is ``categories[i]``.

    Returns:
        (json path, PNG folder).
    """
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, ids, segments in images:
        file_name = f"{image_id:012d}.png"
        Image.fromarray(ids_to_rgb(ids)).save(folder / file_name)
        annotations.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "segments_info": [
                    {
                        "id": s["id"],
                        "category_id": categories[s["category"]]["id"],
                        "iscrowd": s.get("iscrowd", 0),
                        "area": int(s.get("area", (ids == s["id"]).sum())),
                    }
                    for s in segments
                ],
            }
        )
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i, _, _ in images], "annotations": annotations, "categories": categories}
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return path, folder


def reference_pq(gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path) -> dict:
    """Score with the COCO panoptic API in this process.

    Returns:
        ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {cat_id: {pq, sq, rq}},
        "stat": {cat_id: (iou, tp, fp, fn)}}`` (fractions, as the API returns them; an empty
        group, where the API raises ZeroDivisionError, reads 0 with n = 0).
    """
    import pytest

    evaluation = pytest.importorskip(
        "panopticapi.evaluation",
        reason="the COCO panoptic API (`pip install --no-deps panopticapi-lite`, "
        "done by `make install`) is the reference these tests compare with",
    )

    gt_data = json.loads(Path(gt_json).read_text())
    pred_data = json.loads(Path(pred_json).read_text())
    categories = {c["id"]: c for c in gt_data["categories"]}
    preds = {a["image_id"]: a for a in pred_data["annotations"]}
    pairs = [(a, copy.deepcopy(preds[a["image_id"]])) for a in gt_data["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = evaluation.pq_compute_single_core(0, pairs, str(gt_folder), str(pred_folder), categories)
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            results[name], per_class = stat.pq_average(categories, isthing=isthing)
        except ZeroDivisionError:  # the API divides by n = 0 for an empty group; odise-pl reports 0
            results[name] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
        if name == "All":
            results["per_class"] = per_class
    results["stat"] = {cid: (stat[cid].iou, stat[cid].tp, stat[cid].fp, stat[cid].fn) for cid in categories}
    return results
