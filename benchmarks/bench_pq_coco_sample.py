"""PQ timing on real COCO panoptic maps: the shared two-image sample, replicated, one core.

The GT maps of ``shared/data/coco_panoptic_sample`` (beside the repository) are replicated
``--copies`` times; predictions come from the test suite's ``perturb`` (strength 3); both are
written by PIL. Times, in interleaved rounds: the COCO panoptic API's ``pq_compute_single_core``,
``evaluate_panoptic_folders`` (``odise-pl eval panoptic``) and PIL decoding alone; checks both PQs
agree to 1e-6.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_pq_coco_sample.py --copies 50
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from odise_pl.formats.coco_panoptic import read_panoptic_png  # noqa: E402
from odise_pl.metrics.panoptic_io import (  # noqa: E402
    PanopticCategories,
    evaluate_panoptic_folders,
    segments_from_json,
)
from tests.metrics.synthetic_panoptic import perturb, write_panoptic  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "coco_panoptic_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample", default=str(SAMPLE))
    args = parser.parse_args()
    from panopticapi import evaluation

    sample = Path(args.sample)
    data = json.loads((sample / "panoptic_examples.json").read_text())
    cats = PanopticCategories.from_json(data["categories"])
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(args.copies):
        for ann in data["annotations"]:
            ids = read_panoptic_png(sample / "panoptic" / ann["file_name"]).astype(np.int64)
            segs = segments_from_json(ann["segments_info"], cats.index_of(), ann["file_name"])
            image_id = len(gts) + 1
            gts.append((image_id, ids, segs))
            preds.append((image_id, *perturb(rng, ids, segs, strength=3, num_classes=len(cats.ids))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_json, gt_dir = write_panoptic(root, "gt", gts, data["categories"])
        pred_json, pred_dir = write_panoptic(root, "pred", preds, data["categories"])
        gt = json.loads(gt_json.read_text())
        pred = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
        categories = {c["id"]: c for c in gt["categories"]}
        files = [p for folder in (gt_dir, pred_dir) for p in sorted(folder.glob("*.png"))]
        out = {}

        def api() -> None:
            pairs = [(a, copy.deepcopy(pred[a["image_id"]])) for a in gt["annotations"]]
            with contextlib.redirect_stdout(io.StringIO()):
                stat = evaluation.pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), categories)
            out["api"] = 100 * stat.pq_average(categories, None)[0]["pq"]

        def ours() -> None:
            out["ours"] = evaluate_panoptic_folders(gt_json, gt_dir, pred_json, pred_dir)["PQ"]

        def floor() -> None:
            for path in files:
                with Image.open(path) as img:
                    img.load()

        ours()  # allocate the id tables outside the timings
        times: dict[str, list[float]] = {"api": [], "ours": [], "floor": []}
        for _ in range(args.rounds):
            for key, fn in (("api", api), ("ours", ours), ("floor", floor)):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    if abs(out["api"] - out["ours"]) > 1e-6:
        raise SystemExit(f"PQ differs: API {out['api']:.6f} vs odise-pl {out['ours']:.6f}")
    n = len(gts)
    ms = {k: 1000 * min(v) / n for k, v in times.items()}
    print(
        f"{n} real COCO maps, PQ {out['api']:.6f} (both), ms/image: API {ms['api']:.2f}, "
        f"odise-pl {ms['ours']:.2f}, decode floor {ms['floor']:.2f}"
    )
    print(
        f"speed-up {ms['api'] / ms['ours']:.2f}x, ceiling {ms['api'] / ms['floor']:.2f}x, slowest/fastest "
        + ", ".join(f"{k} {max(v) / min(v):.2f}" for k, v in times.items())
    )


if __name__ == "__main__":
    main()
