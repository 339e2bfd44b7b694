"""Time odise-pl's PQ against the COCO panoptic API on identical generated data, one core.

Writes ``--images`` random GT / prediction pairs (COCO panoptic PNG + JSON, COCO-like
RGB ids) to a temporary folder, checks both give the same PQ, then prints images/s for:

* folders: ``evaluate_panoptic_folders(workers=1)`` vs the API's
  ``pq_compute_single_core`` (both decode the PNGs);
* in memory: ``PanopticQuality.update`` on decoded int64 tensors (the
  validation-loop path) vs ``pq_compute_single_core`` with ``Image.open``
  patched to return the already decoded RGB arrays.

Each timing is the best of ``--repeat`` runs (the machine may be shared).

Usage:
    python benchmarks/bench_pq.py --images 50 --size 512
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import odise_pl  # noqa: E402,F401  (torchvision workaround before torchmetrics)
from odise_pl.metrics.panoptic_io import evaluate_panoptic_folders, read_panoptic_png  # noqa: E402
from odise_pl.metrics.panoptic_quality import PanopticQuality  # noqa: E402

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
    gt_segs = [{"id": int(gt_id[i]), "category_id": cats[i] + 1, "iscrowd": crowd[i],
                "area": int((labels == i + 1).sum())} for i in range(segments) if (labels == i + 1).any()]
    pred_segs = [{"id": int(pred_id[i]), "category_id": pred_cats[i] + 1, "iscrowd": 0}
                 for i in range(segments) if (shifted == i + 1).any()]
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


class _DecodedImages:
    """Stands in for ``PIL.Image`` inside the API: ``open(path)`` returns a decoded array."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def open(self, path: str) -> np.ndarray:
        return self.arrays[path]


def best_time(fn, repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reference(root: Path, repeat: int, in_memory: bool) -> tuple[float, float]:
    """(seconds, PQ in percent) with the COCO panoptic API's single-core loop."""
    from panopticapi import evaluation

    gt = json.loads((root / "gt.json").read_text())
    pred = {a["image_id"]: a for a in json.loads((root / "pred.json").read_text())["annotations"]}
    categories = {c["id"]: c for c in CATEGORIES}
    original = evaluation.Image
    if in_memory:
        paths = [str(p) for folder in ("gt", "pred") for p in sorted((root / folder).glob("*.png"))]
        evaluation.Image = _DecodedImages({p: np.asarray(Image.open(p)) for p in paths})
    stats = []

    def run() -> None:
        pairs = [(a, copy.deepcopy(pred[a["image_id"]])) for a in gt["annotations"]]
        with contextlib.redirect_stdout(io.StringIO()):
            stats.append(evaluation.pq_compute_single_core(0, pairs, str(root / "gt"), str(root / "pred"),
                                                           categories))
    try:
        seconds = best_time(run, repeat)
    finally:
        evaluation.Image = original
    return seconds, 100 * stats[-1].pq_average(categories, isthing=None)[0]["pq"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=512, help="square map side in pixels")
    parser.add_argument("--segments", type=int, default=60, help="segments drawn per image")
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, n, args.size, args.segments, args.seed)
        ref_s, ref_pq = reference(root, args.repeat, in_memory=False)
        ref_mem_s, ref_mem_pq = reference(root, args.repeat, in_memory=True)
        results = {}
        ours_s = best_time(lambda: results.update(evaluate_panoptic_folders(
            root / "gt.json", root / "gt", root / "pred.json", root / "pred")), args.repeat)

        decoded = [(read_panoptic_png(root / "pred" / p.name), read_panoptic_png(p))
                   for p in sorted((root / "gt").glob("*.png"))]
        index = {c["id"]: i for i, c in enumerate(CATEGORIES)}
        anns = {}
        for folder in ("gt", "pred"):
            anns[folder] = [[{"id": s["id"], "category": index[s["category_id"]], "iscrowd": s["iscrowd"]}
                             for s in a["segments_info"]]
                            for a in json.loads((root / f"{folder}.json").read_text())["annotations"]]
        metric = PanopticQuality(is_thing=[bool(c["isthing"]) for c in CATEGORIES])

        def update_all() -> None:
            metric.reset()
            for (pred_ids, gt_ids), pred_segs, gt_segs in zip(decoded, anns["pred"], anns["gt"]):
                metric.update(pred_ids, pred_segs, gt_ids, gt_segs)

        update_s = best_time(update_all, args.repeat)
    for name, value in (("evaluate_panoptic_folders", results["PQ"]), ("API in memory", ref_mem_pq),
                        ("PanopticQuality", float(metric.compute()["PQ"]))):
        if abs(value - ref_pq) > 1e-6:
            raise SystemExit(f"PQ differs: {name} {value:.6f} vs API {ref_pq:.6f}")

    print(f"{n} images of {args.size}x{args.size}, <= {args.segments} segments, 1 thread, "
          f"best of {args.repeat}; PQ = {ref_pq:.3f} (all agree)")
    print(f"{'':44s} {'images/s':>9s} {'ms/image':>9s}")
    rows = [("folders: COCO API pq_compute_single_core", ref_s),
            ("folders: odise-pl evaluate_panoptic_folders", ours_s),
            ("in memory: COCO API (decoding patched out)", ref_mem_s),
            ("in memory: odise-pl PanopticQuality.update", update_s)]
    for name, seconds in rows:
        print(f"{name:44s} {n / seconds:9.1f} {1000 * seconds / n:9.2f}")
    print(f"speed-up, folders:   {ref_s / ours_s:.2f}x")
    print(f"speed-up, in memory: {ref_mem_s / update_s:.2f}x")


if __name__ == "__main__":
    main()
