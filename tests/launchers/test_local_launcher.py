"""``--launcher local --max-parallel 2``: two runs at once on this machine (no GPUs: no CUDA split);
a failing run is reported with its log's tail and the other one finishes."""

from __future__ import annotations

import json

import pytest

from odise_pl.cli import main
from odise_pl.launchers.local import gpu_slots
from tests.launchers.conftest import BAD, GOOD, write_sweep


def test_gpu_slots_are_disjoint_and_cpu_slots_empty():
    assert gpu_slots(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
    assert gpu_slots(["0", "1", "2"], 3) == [["0"], ["1"], ["2"]]
    assert gpu_slots([], 2) == [[], []]


@pytest.mark.slow  # two tiny trainings in parallel processes: ~20-40 s on 2 cores
def test_two_runs_at_once_one_fails_the_other_finishes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("odise_pl.launchers.local.visible_gpus", lambda: [])
    sweep = write_sweep(tmp_path / "s.yaml", "par", [GOOD, BAD])
    argv = [
        "sweep",
        "-c",
        str(sweep),
        "--launcher",
        "local",
        "--max-parallel",
        "2",
        f"run.root={tmp_path / 'runs'}",
        f"data.root={tmp_path / 'data'}",
    ]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    started = [i for i, line in enumerate(lines) if ": started (pid " in line]
    ended = [i for i, line in enumerate(lines) if line.startswith("backbone=clip: done (")]
    assert len(started) == 2 and ended and max(started) < ended[0], out  # both ran at once
    assert "GPUs" not in out
    assert "run backbone=mae__nonexistent_mae-weights failed (exit code 2); the sweep goes on" in err
    assert "mae-weights" in err.split("ends:", 1)[1]  # the tail of its log names the problem
    sweep_dir = tmp_path / "runs" / "par"
    final = json.loads((sweep_dir / "backbone=clip" / "version_0" / "metrics.json").read_text())["final"]
    assert 0.0 <= final["PQ"] <= 100.0
    assert (sweep_dir / "backbone=clip" / "fit.log").is_file()
    record = json.loads((sweep_dir / "launches" / "launch_000.json").read_text())
    assert record["launcher"] == "local" and len(record["runs"]) == 2

    assert main(["sweep", "status", "-c", str(sweep), f"run.root={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "0 pending, 0 running, 1 done, 1 failed" in out and "the end of its log" in out
