"""Smoke test of benchmarks/cli_startup.py: tiny sizes, one run; the JSON has every field (not timing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cli_startup.py"


def test_cli_startup_tiny_writes_json(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("cli_startup", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "startup.json"
    monkeypatch.setattr(sys, "argv", ["cli_startup.py", "--tiny", "--workers", "1", "2", "--out", str(out)])
    bench.main()  # exits when a worker count gives another PQ or a command fails
    assert "ratio to import torch" in capsys.readouterr().out
    result = json.loads(out.read_text())
    startup = result["startup"]
    for name in ("import_torch", "odise_pl_help", "eval_panoptic_help", "eval_panoptic_one_image"):
        assert startup[name]["median_s"] > 0 and len(startup[name]["runs_s"]) == 1, name
    assert startup["import_torch"]["median_cpu_s"] > 0
    assert (
        set(startup["cpu_ratios_to_import_torch"])
        == set(startup["ratios_to_import_torch"])
        == {"odise_pl_help", "eval_panoptic_help", "eval_panoptic_one_image"}
    )
    workers = result["workers"]
    assert 0 <= workers["pq"] <= 100 and workers["decode_floor"]["ms_per_image"] > 0
    for n in (1, 2):
        row = workers[f"workers_{n}"]
        assert set(row) >= {"median_s", "ms_per_image", "images_per_s", "per_core_fraction_of_decode_floor"}
    assert result["machine"]["usable_cpus"] >= 1
