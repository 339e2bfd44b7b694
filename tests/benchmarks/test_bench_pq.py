"""Smoke test of benchmarks/bench_pq.py: tiny folders, one round; every path agrees with the API."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("panopticapi.evaluation")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pq.py"


def test_bench_pq_tiny_writes_json(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_pq", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "pq.json"
    monkeypatch.setattr(
        sys, "argv", ["bench_pq.py", "--images", "3", "--size", "64", "--segments", "12", "--repeat", "1", "--out", str(out)]
    )
    bench.main()  # exits when any path's PQ differs from the API's by more than 1e-6
    assert "all agree to 1e-6" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert 0 < result["pq"] < 100
    assert set(result["speedups"]) >= {"folders_vs_pq_compute", "folders_vs_single_core", "in_memory_numpy"}
    assert all(v > 0 for v in result["ms_per_image"].values())
