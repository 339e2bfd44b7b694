"""Start-up time of ``odise-pl`` against ``import torch``, and ``eval panoptic --workers`` scaling (issue #17).

Start-up: the median of ``--runs`` fresh interpreters (interleaved, so a load spike on a
shared machine hits every command alike) of

* ``python -c "import torch"`` (the yardstick),
* ``python -m odise_pl.cli --help``,
* ``python -m odise_pl.cli eval panoptic --help``,
* ``python -m odise_pl.cli eval panoptic ...`` on a one-image set (a whole run);

the ratios to ``import torch`` are the figures of merit (target <= 1.5).

Scaling: ``odise-pl eval panoptic --workers N`` (a fresh process per run, the time it prints for
the evaluation) on ``--images`` generated ``--size`` px pairs (``pq_data.py``, ``bench_pq.py``'s data:
random 24-bit ids, stuff blocks, thing rectangles, crowd, VOID speckle, a shifted and partly
relabelled prediction), against the decode floor (PIL ``Image.load`` of the two PNGs, in this
process). ``per_core_fraction_of_decode_floor`` = floor / (N x eval time): 1.0 would be an
evaluator that costs nothing beyond decoding on every core (the "decode-bound ceiling" of
``RESULTS.md``). Every N must give the same PQ (the script exits otherwise).

    python benchmarks/cli_startup.py --runs 7 --images 200 --size 512 --workers 1 2 --out results/cpu_startup.json
    python benchmarks/cli_startup.py --tiny --out /tmp/startup.json      # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_pq_data():
    """``benchmarks/pq_data.py`` (the PQ benchmarks' data generator) as a module."""
    spec = importlib.util.spec_from_file_location("pq_data", Path(__file__).with_name("pq_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system, its child processes included) of one fresh process.

    Exits when the process fails. CPU seconds move less than wall seconds when the machine is shared.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(times: list[float], cpu: list[float] | None = None) -> dict:
    out = {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times}
    if cpu is not None:
        out.update(median_cpu_s=statistics.median(cpu), runs_cpu_s=cpu)
    return out


def eval_argv(root: Path, workers: int | None) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "odise_pl.cli",
        "eval",
        "panoptic",
        "--gt-json",
        str(root / "gt.json"),
        "--pred-json",
        str(root / "pred.json"),
        "--out",
        str(root / "result.json"),
    ]
    return argv + ([] if workers is None else ["--workers", str(workers)])


def measure_startup(runs: int, tiny_set: Path) -> dict:
    commands = {
        "import_torch": [sys.executable, "-c", "import torch"],
        "odise_pl_help": [sys.executable, "-m", "odise_pl.cli", "--help"],
        "eval_panoptic_help": [sys.executable, "-m", "odise_pl.cli", "eval", "panoptic", "--help"],
        "eval_panoptic_one_image": eval_argv(tiny_set, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            wall, cpu_s = run_once(argv)
            times[name].append(wall)
            cpu[name].append(cpu_s)
    out = {name: summary(times[name], cpu[name]) for name in commands}
    torch_s, torch_cpu = out["import_torch"]["median_s"], out["import_torch"]["median_cpu_s"]
    out["ratios_to_import_torch"] = {name: out[name]["median_s"] / torch_s for name in commands if name != "import_torch"}
    out["cpu_ratios_to_import_torch"] = {name: out[name]["median_cpu_s"] / torch_cpu for name in commands if name != "import_torch"}
    return out


def decode_floor(root: Path, runs: int) -> float:
    """Median seconds to decode every GT and prediction PNG with PIL and nothing else (one process)."""
    from PIL import Image

    paths = [p for folder in ("gt", "pred") for p in sorted((root / folder).glob("*.png"))]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for path in paths:
            with Image.open(path) as img:
                img.load()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_workers(root: Path, images: int, workers: list[int], runs: int) -> dict:
    times: dict[int, list[float]] = {n: [] for n in workers}
    pq: dict[int, float] = {}
    floor_runs = []
    for _ in range(runs):  # rounds interleave the worker counts and the floor
        floor_runs.append(decode_floor(root, 1))
        for n in workers:
            run_once(eval_argv(root, n))
            result = json.loads((root / "result.json").read_text())
            times[n].append(result["seconds"])  # the evaluation, as timed by the command itself
            pq[n] = result["PQ"]
    if len(set(pq.values())) != 1:
        raise SystemExit(f"PQ differs between worker counts: {pq}")
    floor_s = statistics.median(floor_runs)
    out: dict = {"images": images, "pq": pq[workers[0]], "decode_floor": {**summary(floor_runs), "ms_per_image": 1000 * floor_s / images}}
    for n in workers:
        med = statistics.median(times[n])
        out[f"workers_{n}"] = {
            **summary(times[n]),
            "ms_per_image": 1000 * med / images,
            "images_per_s": images / med,
            "per_core_fraction_of_decode_floor": floor_s / (n * med),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="repetitions of every timing (median reported)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="square map side in pixels")
    parser.add_argument("--segments", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tiny", action="store_true", help="smoke test: 1 run, 4 images of 32 px")
    parser.add_argument("--out", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    if args.tiny:
        args.runs, args.images, args.size, args.segments = 1, 4, 32, 8
    pq_data = load_pq_data()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tiny, big = Path(tmp) / "one", Path(tmp) / "set"
        tiny.mkdir()
        big.mkdir()
        pq_data.write_dataset(tiny, 1, 64, 8, seed=1)
        pq_data.write_dataset(big, args.images, args.size, args.segments, seed=0)
        startup = measure_startup(args.runs, tiny)
        scaling = measure_workers(big, args.images, args.workers, args.runs)
    result = {
        "args": vars(args),
        "startup": startup,
        "workers": scaling,
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "python": platform.python_version(),
    }
    print(f"start-up, median of {args.runs} (s): " + ", ".join(f"{k} {v['median_s']:.3f}" for k, v in startup.items() if "median_s" in v))
    print("CPU-time ratio to import torch: " + ", ".join(f"{k} {v:.2f}" for k, v in startup["cpu_ratios_to_import_torch"].items()))
    print("ratio to import torch: " + ", ".join(f"{k} {v:.2f}" for k, v in startup["ratios_to_import_torch"].items()))
    for n in args.workers:
        row = scaling[f"workers_{n}"]
        print(
            f"eval panoptic --workers {n}: {row['ms_per_image']:.2f} ms/image, {row['images_per_s']:.1f} img/s, "
            f"per core {row['per_core_fraction_of_decode_floor']:.2f} of the decode floor "
            f"({scaling['decode_floor']['ms_per_image']:.2f} ms/image)"
        )
    print(f"load average start / end: {load_start} / {result['machine']['load_average_end']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
