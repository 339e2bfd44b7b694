"""Smoke test of benchmarks/bench_model.py at tiny shapes on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_model.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_model_tiny_writes_json(tmp_path):
    bench = _load()
    out = tmp_path / "bench.json"
    bench.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--size",
            "64",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--mode",
            "infer",
            "train",
            "--batch",
            "1",
            "--precision",
            "fp32",
            "bf16-frozen",
            "--num-classes",
            "5",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    for key in ("env", "params", "attention_processors", "results", "size"):
        assert key in report
    assert report["env"]["torch"]
    assert report["params"]["frozen"] > 0 and report["params"]["trainable"] > 0
    rows = report["results"]
    assert [(r["mode"], r["precision"]) for r in rows] == [
        ("infer", "fp32"),
        ("train", "fp32"),
        ("infer", "bf16-frozen"),
        ("train", "bf16-frozen"),
    ]
    for row in rows:
        assert "error" not in row, row
        for key in ("images_per_s", "ms_per_iter_median", "peak_gib", "batch", "window"):
            assert key in row
        assert row["images_per_s"] > 0
    infer = rows[0]
    assert infer["gflops_per_image"] > 0 and "pct_of_989_peak" in infer


def test_bench_model_fcclip_tiny_at_a_non_square_size(tmp_path):
    """FC-CLIP in the same script: its recipe at toy size, an H x W image padded to /32, the reference path."""
    bench = _load()
    out = tmp_path / "fcclip.json"
    bench.main(
        [
            "--method",
            "fcclip",
            "--tiny",
            "--device",
            "cpu",
            "--hw",
            "48",
            "83",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--mode",
            "infer",
            "--batch",
            "1",
            "--precision",
            "fp32",
            "--num-classes",
            "5",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["method"] == "fcclip" and report["hw"] == [48, 83] and report["attention_processors"] is None
    assert report["params"]["trainable"] > 0 and report["params"]["frozen"] > 0
    (row,) = report["results"]
    assert "error" not in row, row
    assert row["images_per_s"] > 0 and row["gflops_per_image"] > 0
