"""Smoke test of benchmarks/bench_data.py (LSJ data-loading throughput) at tiny sizes on the CPU."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_data_tiny_writes_json(tmp_path):
    bench = _load()
    out = tmp_path / "bench_data.json"
    bench.main(
        ["--tiny", "--workers", "0", "1", "--batch-size", "2", "--batches", "3", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    )
    report = json.loads(out.read_text())
    assert report["env"]["torch"] and report["env"]["cpu_count"] >= 1
    assert (tmp_path / "data" / "synth_6x64_s0" / "synthetic_shapes.json").is_file()
    (row,) = report["results"]
    assert row["crop_size"] == 64
    stages = row["stages"]
    assert stages["images"] == 2
    for key in ("decode_ms", "lsj_ms", "targets_ms", "collate_ms", "total_ms", "images_per_s", "total_cpu_ms", "images_per_cpu_s"):
        assert math.isfinite(stages[key]) and stages[key] > 0, (key, stages)
    assert [r["workers"] for r in row["loader"]] == [0, 1]
    for r in row["loader"]:
        assert r["images"] == 3 * 2 and r["batch_hw"] == [64, 64]  # 3 timed batches of 2 crops of 64
        for key in ("images_per_s", "images_per_s_per_worker", "seconds", "ms_per_batch_median"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    in_process = row["loader"][0]
    assert in_process["images_per_s_per_worker"] == in_process["images_per_s"]
    assert math.isfinite(in_process["images_per_cpu_s"]) and in_process["images_per_cpu_s"] > 0
    assert row["loader"][1]["images_per_cpu_s"] is None  # the work is in the worker, not counted here
