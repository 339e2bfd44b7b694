"""Data-loading throughput of the LSJ training pipeline: images/s per CPU worker.

Runs the project's own training data path, :class:`CocoPanopticDataModule`'s
``train_dataloader()`` (JPEG + panoptic PNG decoding, id checks, large-scale jitter
(flip, rescale in [0.1, 2.0] x crop, crop, pad), per-segment boolean masks, captions,
:class:`PanopticCollate`), on a COCO-panoptic-format folder: by default one generated
with ``odise-pl data synth`` (procedural shapes, square images of ``--image-size``;
640 by default, about COCO's 640x480), or any folder in that layout (``--root``).

Measured, for every ``--crop-size`` (the reference trains on 1024 crops):

* ``stages``: one process, no DataLoader: milliseconds per image of each step
  (decode = JPEG + PNG read, checks = id check, lsj = the jitter, targets = masks,
  collate) over ``--stage-images`` images;
  wall-clock and CPU (``time.process_time``) milliseconds; ``images_per_cpu_s`` is the
  throughput of one worker with a core to itself, which shared machines cannot give;
* ``loader``: for every ``--workers`` count, the DataLoader's images/s after a warm-up
  (the first ``--warmup`` batches, which include starting the workers), over
  ``--batches`` batches of ``--batch-size``; ``images_per_s_per_worker`` divides by the
  number of worker processes (workers 0: by 1, the main process does the work), and
  with workers 0 ``images_per_cpu_s`` counts the main process's CPU time.

Files are read from the page cache after the first epoch (the folder is small): this
measures the CPU cost of the pipeline, not the disk.

Usage:
    python benchmarks/bench_data.py --crop-size 1024 256 --workers 0 1 2 --out results/cpu_data.json
    python benchmarks/bench_data.py --tiny --out /tmp/bench_data.json     # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import odise_pl  # noqa: F401  (torchvision workaround before the data modules)
from odise_pl.data_modules.coco_panoptic import CocoPanopticDataModule
from odise_pl.data_modules.collate import PanopticCollate
from odise_pl.data_modules.synthetic_shapes import generate_synthetic_coco
from odise_pl.data_modules.transforms import build_targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="a COCO-panoptic-format folder (default: generate one)")
    p.add_argument("--data-dir", default=None, help="where to generate (and reuse) the synthetic folder (default: a temporary folder)")
    p.add_argument("--num-images", type=int, default=64, help="images to generate (default 64)")
    p.add_argument("--image-size", type=int, default=640, help="side of the generated images (default 640)")
    p.add_argument("--crop-size", type=int, nargs="+", default=[1024, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=2, help="per process (reference: 2 per GPU)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (worker start-up)")
    p.add_argument("--stage-images", type=int, default=16, help="images for the per-stage breakdown")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="smoke test: 6 images of 64 px, crop 64, 2 batches")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    if "--tiny" in (sys.argv[1:] if argv is None else argv):  # tiny defaults; explicit options still win
        p.set_defaults(num_images=6, image_size=64, crop_size=[64], batches=2, warmup=1, stage_images=2)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------- data
def dataset_root(args: argparse.Namespace, tmp: str) -> Path:
    """``--root``, or a synthetic folder (generated once per parameters under ``--data-dir``)."""
    if args.root:
        return Path(args.root)
    base = Path(args.data_dir) if args.data_dir else Path(tmp)
    root = base / f"synth_{args.num_images}x{args.image_size}_s{args.seed}"
    if not (root / "synthetic_shapes.json").is_file():
        generate_synthetic_coco(root, args.num_images, 1, args.seed, args.image_size)
    return root


def data_module(root: Path, crop: int, workers: int, batch_size: int) -> CocoPanopticDataModule:
    """The training data module of the reference recipe (LSJ 0.1-2.0, flip) at ``crop``."""
    captions = "annotations/captions_train2017.json"
    dm = CocoPanopticDataModule(
        root=str(root),
        crop_size=crop,
        num_workers=workers,
        batch_size=batch_size,
        train_captions_json=captions if (root / captions).is_file() else None,
        pin_memory=False,
    )
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------------------------- measure
def stage_breakdown(dm: CocoPanopticDataModule, images: int, batch_size: int, seed: int) -> dict:
    """Milliseconds per image of each step of ``CocoPanopticDataset.load`` + collate, in this process."""
    from odise_pl.data_modules.coco_panoptic import distinct_ids
    from odise_pl.data_modules.panoptic_files import read_rgb_image
    from odise_pl.formats.coco_panoptic import read_panoptic_png

    dataset = dm.datasets["train"]
    rng = np.random.default_rng(seed)
    collate = PanopticCollate(dm.size_divisibility)
    stages = ("decode", "checks", "lsj", "targets", "collate")
    wall: dict[str, float] = dict.fromkeys(stages, 0.0)
    cpu: dict[str, float] = dict.fromkeys(stages, 0.0)

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def add(key: str, start: tuple[float, float]) -> tuple[float, float]:
        now = clock()
        wall[key] += now[0] - start[0]
        cpu[key] += now[1] - start[1]
        return now

    items = []
    for i in range(images):
        rec = dataset.records[i % len(dataset)]
        t = clock()
        ids = read_panoptic_png(rec.panoptic_path).astype(np.int64)
        image = read_rgb_image(rec.image_path, ids.shape)
        t = add("decode", t)
        distinct_ids(ids)  # the dataset's segment-id check
        t = add("checks", t)
        image_t, ids_t, valid = dataset.transform(image, ids, rng)
        t = add("lsj", t)
        target = build_targets(ids_t, rec.segments, rec.image_id)
        add("targets", t)
        items.append(
            {
                "image": torch.from_numpy(np.ascontiguousarray(image_t.transpose(2, 0, 1))),
                "image_size": valid,
                "target": target,
                "captions": rec.captions,
            }
        )
    for start in range(0, len(items), batch_size):
        t = clock()
        collate(items[start : start + batch_size])
        add("collate", t)
    out: dict = {f"{k}_ms": round(1e3 * wall[k] / images, 3) for k in stages}
    out.update({f"{k}_cpu_ms": round(1e3 * cpu[k] / images, 3) for k in stages})
    out["total_ms"] = round(1e3 * sum(wall.values()) / images, 3)
    out["total_cpu_ms"] = round(1e3 * sum(cpu.values()) / images, 3)
    out["images_per_s"] = round(1e3 / out["total_ms"], 2)
    out["images_per_cpu_s"] = round(1e3 / max(out["total_cpu_ms"], 1e-6), 2)
    out["images"] = images
    return out


def loader_throughput(dm: CocoPanopticDataModule, batches: int, warmup: int) -> dict:
    """Images/s of ``train_dataloader()`` after ``warmup`` batches; epochs are chained if needed."""
    loader = dm.train_dataloader()
    stream = itertools.chain.from_iterable(itertools.repeat(loader))  # persistent workers across epochs
    t_start = time.perf_counter()
    for _ in range(warmup):
        next(stream)
    t0, c0 = time.perf_counter(), time.process_time()
    per_batch, counted, pixels = [], 0, 0
    for _ in range(batches):
        tb = time.perf_counter()
        batch = next(stream)
        per_batch.append(time.perf_counter() - tb)
        counted += batch["images"].shape[0]
        pixels = tuple(batch["images"].shape[-2:])
    elapsed, main_cpu = time.perf_counter() - t0, time.process_time() - c0
    warmup_s = t0 - t_start
    del stream, loader  # stops the workers
    workers = dm.num_workers
    ips = counted / elapsed
    return {
        "workers": workers,
        "batch_size": dm.batch_size,
        "batches": batches,
        "images": counted,
        "batch_hw": list(pixels),
        "seconds": round(elapsed, 3),
        "warmup_s": round(warmup_s, 3),
        "images_per_s": round(ips, 2),
        "images_per_s_per_worker": round(ips / max(1, workers), 2),
        "ms_per_batch_median": round(1e3 * statistics.median(per_batch), 2),
        # CPU seconds of the main process; with workers 0 it does all the work: images per CPU-second
        "main_cpu_s": round(main_cpu, 3),
        "images_per_cpu_s": round(counted / main_cpu, 2) if workers == 0 and main_cpu > 0 else None,
    }


# -------------------------------------------------------------------------------------- main
def environment() -> dict:
    import PIL

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "processor": platform.processor() or platform.machine(),
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    report: dict = {"env": environment(), "argv": sys.argv[1:] if __name__ == "__main__" else None, "results": []}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        t0 = time.perf_counter()
        root = dataset_root(args, tmp)
        report.update(
            root=str(root) if args.root or args.data_dir else "(temporary)",
            prepare_s=round(time.perf_counter() - t0, 2),
            num_images=args.num_images,
            image_size=args.image_size,
        )
        for crop in args.crop_size:
            dm = data_module(root, crop, 0, args.batch_size)
            row = {"crop_size": crop, "stages": stage_breakdown(dm, args.stage_images, args.batch_size, args.seed), "loader": []}
            print(json.dumps({"crop_size": crop, "stages": row["stages"]}), flush=True)
            for workers in args.workers:
                result = loader_throughput(data_module(root, crop, workers, args.batch_size), args.batches, args.warmup)
                row["loader"].append(result)
                print(json.dumps({"crop_size": crop, **result}), flush=True)
            report["results"].append(row)
    report["env"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def format_table(report: dict) -> str:
    lines = ["crop | workers | images/s | images/s per worker | ms/batch | in-process CPU ms/image (decode, checks, lsj, targets, collate)"]
    for row in report["results"]:
        s = row["stages"]
        stages = (
            f"{s['total_cpu_ms']} ({s['decode_cpu_ms']}, {s['checks_cpu_ms']}, {s['lsj_cpu_ms']}, "
            f"{s['targets_cpu_ms']}, {s['collate_cpu_ms']})"
        )
        for r in row["loader"]:
            lines.append(
                f"{row['crop_size']} | {r['workers']} | {r['images_per_s']} | "
                f"{r['images_per_s_per_worker']} | {r['ms_per_batch_median']} | {stages}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    report = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(format_table(report), flush=True)
    return report


if __name__ == "__main__":
    main()
