"""Time ``odise-pl eval panoptic`` against the COCO panoptic API on identical generated data, one core.

Writes ``--images`` random GT / prediction pairs (COCO panoptic PNG + JSON, COCO-like
RGB ids) to a temporary folder, checks every path gives the same PQ (to 1e-6), then
prints ms/image for:

* folders, the whole entry points: ``evaluate_panoptic_folders(workers=1)`` (what
  ``odise-pl eval panoptic`` runs) vs the API's ``pq_compute`` with
  ``multiprocessing.cpu_count`` forced to 1 (one pool worker; includes its start);
* folders, the per-image loops: the same vs the API's ``pq_compute_single_core``;
* decode floor: PIL decoding the two PNGs of each image into arrays and nothing
  else, which neither implementation can skip (API speed / this = the most any
  exact evaluator that decodes with PIL can gain);
* in memory (decoding excluded): ``pq_stats_numpy`` on decoded uint32 maps (the
  folder evaluator's core), ``PanopticQuality.update`` on int64 tensors (the
  validation-loop metric), vs ``pq_compute_single_core`` with ``Image.open``
  patched to return already decoded RGB arrays.

Each timing is the best of ``--repeat`` runs (the machine may be shared). Example:

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_pq.py --images 100 --size 512 --out r.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import odise_pl  # noqa: E402,F401  (torchvision workaround before torchmetrics)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pq_data import CATEGORIES, NUM_CATEGORIES, random_pair, write_dataset  # noqa: E402,F401

from odise_pl.formats.coco_panoptic import read_panoptic_png as decode_panoptic_png  # noqa: E402
from odise_pl.metrics.panoptic_io import evaluate_panoptic_folders  # noqa: E402
from odise_pl.metrics.panoptic_quality import PanopticQuality, summarize_pq  # noqa: E402
from odise_pl.metrics.pq_numpy import Scratch, SegmentTable, pq_stats_numpy  # noqa: E402


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
            stats.append(evaluation.pq_compute_single_core(0, pairs, str(root / "gt"), str(root / "pred"), categories))

    try:
        seconds = best_time(run, repeat)
    finally:
        evaluation.Image = original
    return seconds, 100 * stats[-1].pq_average(categories, isthing=None)[0]["pq"]


def reference_entry_point(root: Path, repeat: int) -> tuple[float, float]:
    """(seconds, PQ in percent) of the API's ``pq_compute`` with its pool forced to one process."""
    import multiprocessing

    from panopticapi import evaluation

    original = multiprocessing.cpu_count
    multiprocessing.cpu_count = lambda: 1
    out = {}
    try:

        def run() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                out.update(evaluation.pq_compute(str(root / "gt.json"), str(root / "pred.json"), str(root / "gt"), str(root / "pred")))

        seconds = best_time(run, repeat)
    finally:
        multiprocessing.cpu_count = original
    return seconds, 100 * out["All"]["pq"]


def decode_floor(root: Path, repeat: int) -> float:
    """Seconds to decode every GT and prediction PNG with PIL (``Image.load``) and nothing else."""
    paths = [p for folder in ("gt", "pred") for p in sorted((root / folder).glob("*.png"))]

    def run() -> None:
        for path in paths:
            with Image.open(path) as img:
                img.load()

    return best_time(run, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="square map side in pixels")
    parser.add_argument("--segments", type=int, default=60, help="segments drawn per image")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; each timing is the best round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the timings to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, n, args.size, args.segments, args.seed)
        results = {}
        # first call in this process: includes allocating the id tables (once per process)
        folders = (root / "gt.json", root / "gt", root / "pred.json", root / "pred")
        cold_s = best_time(lambda: evaluate_panoptic_folders(*folders), 1)

        index = {c["id"]: i for i, c in enumerate(CATEGORIES)}
        anns = {}
        for folder in ("gt", "pred"):
            data = json.loads((root / f"{folder}.json").read_text())
            anns[folder] = [a["segments_info"] for a in data["annotations"]]
        names = [p.name for p in sorted((root / "gt").glob("*.png"))]
        maps = [(decode_panoptic_png(root / "gt" / f), decode_panoptic_png(root / "pred" / f)) for f in names]
        tables = [
            tuple(
                SegmentTable.build([s["id"] for s in segs], [index[s["category_id"]] for s in segs], [s.get("iscrowd", 0) for s in segs])
                for segs in (g, p)
            )
            for g, p in zip(anns["gt"], anns["pred"])
        ]
        scratch = Scratch()
        totals = []

        def numpy_all() -> None:
            acc = [0, 0, 0, 0]
            for (gt_ids, pred_ids), (gt_t, pred_t) in zip(maps, tables):
                acc = [a + b for a, b in zip(acc, pq_stats_numpy(gt_ids, gt_t, pred_ids, pred_t, NUM_CATEGORIES, scratch))]
            totals[:] = acc

        decoded = [(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(g.astype(np.int64))) for g, p in maps]
        torch_anns = {
            k: [[{"id": s["id"], "category": index[s["category_id"]], "iscrowd": s.get("iscrowd", 0)} for s in segs] for segs in v]
            for k, v in anns.items()
        }
        metric = PanopticQuality(is_thing=[bool(c["isthing"]) for c in CATEGORIES])

        def update_all() -> None:
            metric.reset()
            for (pred_ids, gt_ids), pred_segs, gt_segs in zip(decoded, torch_anns["pred"], torch_anns["gt"]):
                metric.update(pred_ids, pred_segs, gt_ids, gt_segs)

        # Rounds interleave the implementations, so a load spike on a shared machine hits all of them.
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for key, (seconds, pq) in (
                ("entry", reference_entry_point(root, 1)),
                ("ref", reference(root, 1, in_memory=False)),
                (
                    "ours",
                    (
                        best_time(
                            lambda: results.update(
                                evaluate_panoptic_folders(root / "gt.json", root / "gt", root / "pred.json", root / "pred")
                            ),
                            1,
                        ),
                        None,
                    ),
                ),
                ("floor", (decode_floor(root, 1), None)),
                ("ref_mem", reference(root, 1, in_memory=True)),
                ("numpy", (best_time(numpy_all, 1), None)),
                ("update", (best_time(update_all, 1), None)),
            ):
                times.setdefault(key, []).append(seconds)
                if key == "entry":
                    entry_pq = pq
                elif key == "ref":
                    ref_pq = pq
                elif key == "ref_mem":
                    ref_mem_pq = pq
        entry_s, ref_s, ours_s, floor_s, ref_mem_s, numpy_s, update_s = (
            min(times[k]) for k in ("entry", "ref", "ours", "floor", "ref_mem", "numpy", "update")
        )
        numpy_pq = float(summarize_pq(*(torch.as_tensor(t) for t in totals), torch.tensor([bool(c["isthing"]) for c in CATEGORIES]))["PQ"])
    for name, value in (
        ("evaluate_panoptic_folders", results["PQ"]),
        ("API in memory", ref_mem_pq),
        ("API pq_compute", entry_pq),
        ("pq_stats_numpy", numpy_pq),
        ("PanopticQuality", float(metric.compute()["PQ"])),
    ):
        if abs(value - ref_pq) > 1e-6:
            raise SystemExit(f"PQ differs: {name} {value:.6f} vs API {ref_pq:.6f}")

    print(
        f"{n} images of {args.size}x{args.size}, <= {args.segments} segments, 1 thread, "
        f"best of {args.repeat} interleaved rounds; PQ = {ref_pq:.3f} (all agree to 1e-6)"
    )
    print(f"{'':52s} {'images/s':>9s} {'ms/image':>9s}")
    rows = [
        ("folders: COCO API pq_compute (cpu_count=1)", entry_s),
        ("folders: COCO API pq_compute_single_core", ref_s),
        ("folders: odise-pl eval panoptic (workers=1)", ours_s),
        ("folders: the same, first call (tables allocated)", cold_s),
        ("decode floor: PIL Image.load of both PNGs", floor_s),
        ("in memory: COCO API (decoding patched out)", ref_mem_s),
        ("in memory: odise-pl pq_stats_numpy", numpy_s),
        ("in memory: odise-pl PanopticQuality.update (torch)", update_s),
    ]
    for name, seconds in rows:
        print(f"{name:52s} {n / seconds:9.1f} {1000 * seconds / n:9.2f}")
    speedups = {
        "folders_vs_pq_compute": entry_s / ours_s,
        "folders_vs_single_core": ref_s / ours_s,
        "folders_vs_pq_compute_first_call": entry_s / cold_s,
        "ceiling_single_core_over_decode_floor": ref_s / floor_s,
        "decode_share_of_ours": floor_s / ours_s,
        "in_memory_numpy": ref_mem_s / numpy_s,
        "in_memory_torch_metric": ref_mem_s / update_s,
    }
    spread = {k: max(v) / min(v) for k, v in times.items()}
    print("slowest / fastest round: " + ", ".join(f"{k} {v:.2f}" for k, v in spread.items()))
    for key, value in speedups.items():
        print(f"{key:40s} {value:6.2f}{'' if key == 'decode_share_of_ours' else 'x'}")
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "pq": ref_pq,
                    "ms_per_image": {name: 1000 * sec / n for name, sec in rows},
                    "speedups": speedups,
                    "seconds_per_round": times,
                    "platform": platform.processor() or platform.machine(),
                    "numpy": np.__version__,
                    "pillow": Image.__version__,
                    "python": platform.python_version(),
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
