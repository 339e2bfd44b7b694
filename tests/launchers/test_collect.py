"""``odise-pl sweep collect`` (issue #16): the summary rebuilt from run directories, replicate statistics
checked against hand-computed values, runs still pending, and folders that are not sweeps."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from odise_pl.cli import main
from odise_pl.sweeps.collect import collect
from odise_pl.sweeps.run_state import mark_failed
from tests.launchers.fabricated_sweeps import REPO, fabricate_run, make_sweep_file

T_975_2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (a printed table's value)
T_975_1 = 12.706205  # ... 1 degree of freedom


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_seeded_summary_has_mean_std_and_ci_per_point(tmp_path, capsys):
    sweep_file = make_sweep_file(tmp_path)
    sweep_dir = tmp_path / "runs" / "lrs"
    for seed, pq in zip((0, 1, 2), (50.0, 70.0, 90.0)):
        fabricate_run(sweep_dir, f"lr=0.001/seed={seed}", {"PQ": pq, "SQ": 80.0, "mIoU": 60.0 + seed})
    fabricate_run(sweep_dir, "lr=0.002/seed=0", {"PQ": 40.0, "SQ": 70.0})
    fabricate_run(sweep_dir, "lr=0.002/seed=1", {"PQ": 44.0, "SQ": 71.0})
    fabricate_run(sweep_dir, "lr=0.002/seed=2", None)  # still running
    runs_before = _snapshot(sweep_dir)

    assert main(["sweep", "collect", "-c", str(sweep_file)]) == 0
    out = capsys.readouterr().out
    assert "6 runs: 5 done, 1 running, 0 pending, 0 failed" in out

    with open(sweep_dir / "summary_points.csv") as f:
        points = {r["point"]: r for r in csv.DictReader(f)}
    # lr=0.001, PQ 50, 70, 90: mean 70; std sqrt((20^2 + 0 + 20^2) / 2) = 20; CI 70 -+ t * 20 / sqrt(3)
    half = T_975_2 * 20.0 / math.sqrt(3.0)  # 49.68
    row = points["lr=0.001"]
    assert (row["n"], row["planned"], row["lr"]) == ("3", "3", "0.001")
    assert float(row["PQ_mean"]) == pytest.approx(70.0, abs=0.005)
    assert float(row["PQ_std"]) == pytest.approx(20.0, abs=0.005)
    assert float(row["PQ_ci95_low"]) == pytest.approx(70.0 - half, abs=0.006)
    assert float(row["PQ_ci95_high"]) == pytest.approx(70.0 + half, abs=0.006)
    assert float(row["SQ_std"]) == 0.0 and float(row["SQ_ci95_low"]) == 80.0
    # mIoU 60, 61, 62: mean 61, std 1
    assert float(row["mIoU_mean"]) == pytest.approx(61.0) and float(row["mIoU_std"]) == pytest.approx(1.0)
    # lr=0.002: two of three seeds done, PQ 40, 44: mean 42, std sqrt(2^2 + 2^2) = 2.828,
    # CI 42 -+ t_1 * 2.828 / sqrt(2)
    row = points["lr=0.002"]
    assert (row["n"], row["planned"]) == ("2", "3")
    assert float(row["PQ_mean"]) == pytest.approx(42.0)
    assert float(row["PQ_std"]) == pytest.approx(math.sqrt(8.0), abs=0.005)
    assert float(row["PQ_ci95_high"]) == pytest.approx(42.0 + T_975_1 * math.sqrt(8.0) / math.sqrt(2.0), abs=0.006)
    assert row["mIoU_mean"] == ""  # no replicate logged it

    markdown = (sweep_dir / "summary.md").read_text()
    assert f"| lr=0.001 | 0.001 | 3 | 3 | 70.00 ± 20.00 [{70 - half:.2f}, {70 + half:.2f}] |" in markdown
    assert "95% confidence interval of the mean, Student's t" in markdown
    with open(sweep_dir / "summary.csv") as f:
        runs = {r["run"]: r for r in csv.DictReader(f)}
    assert runs["lr=0.001/seed=2"]["PQ"] == "90.00" and runs["lr=0.001/seed=2"]["point"] == "lr=0.001"
    assert runs["lr=0.001/seed=2"]["seed"] == "2" and runs["lr=0.001/seed=2"]["backbone"] == "clip"
    assert runs["lr=0.002/seed=2"]["state"] == "running" and runs["lr=0.002/seed=2"]["PQ"] == ""
    # collecting only read the run directories; the summary files are complete (no temporary files left)
    assert {k: v for k, v in _snapshot(sweep_dir).items() if k.startswith("lr=")} == runs_before
    assert not list(sweep_dir.glob(".*tmp*"))


def test_collect_while_runs_are_pending_running_or_failed(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    from odise_pl.sweeps.plan_file import PlannedEntry, write_plan

    names = ["t=0", "t=1", "t=2", "t=3"]
    write_plan(sweep_dir, [PlannedEntry(n, n, None, {"model.backbone.t": int(n[-1])}) for n in names])
    fabricate_run(sweep_dir, "t=0", {"PQ": 12.5})
    fabricate_run(sweep_dir, "t=1", None)
    fabricate_run(sweep_dir, "t=2", None)
    mark_failed(sweep_dir / "t=2", "RuntimeError: out of memory")

    found, records = collect(sweep_dir, hparams_view=False)
    assert found == sweep_dir
    assert [(r.entry.name, r.state) for r in records] == [
        ("t=0", "done"),
        ("t=1", "running"),
        ("t=2", "failed"),
        ("t=3", "pending"),
    ]
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["done", "running", "failed", "pending"]
    assert rows[0]["PQ"] == "12.50" and rows[0]["t"] == "0"
    assert rows[2]["status"] == "failed: RuntimeError: out of memory"
    assert not (sweep_dir / "summary_points.csv").exists()  # no seeds, no per-point table

    fabricate_run(sweep_dir, "t=3", {"PQ": 30.0})  # finishes later: the next collect shows it
    _, records = collect(sweep_dir, hparams_view=False)
    assert records[3].state == "done" and records[3].final["PQ"] == 30.0


@pytest.mark.parametrize("what", ["empty", "run", "experiment", "missing"])
def test_collect_on_something_that_is_not_a_sweep(tmp_path, capsys, what):
    target = {
        "empty": tmp_path,
        "run": tmp_path / "quickstart",
        "missing": tmp_path / "nothere",
        "experiment": REPO / "experiments" / "quickstart.yaml",
    }[what]
    if what == "run":
        (target / "version_0").mkdir(parents=True)
    assert main(["sweep", "collect", "-c", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "a sweep is a YAML file with 'base' and 'grid'/'zip'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "summary.md").exists()


def test_collect_writes_the_hparams_view_grouped_by_point(tmp_path):
    from tests.commands.test_sweep_command import hparams_rows

    sweep_dir = tmp_path / "sweep"
    for seed, pq in ((0, 10.0), (1, 20.0)):
        fabricate_run(sweep_dir, f"backbone=mae/seed={seed}", {"PQ": pq}, backbone="mae")
    fabricate_run(sweep_dir, "backbone=dino/seed=0", None, backbone="dino")
    (sweep_dir / "backbone=dino" / "seed=0" / "version_0" / "config.yaml").unlink()  # only sweep.json lists it
    from odise_pl.sweeps.plan_file import PlannedEntry, write_plan

    write_plan(
        sweep_dir,
        [
            PlannedEntry(f"backbone={b}/seed={s}", f"backbone={b}", s, {"model.backbone": {"name": b}, "seed": s})
            for b in ("mae", "dino")
            for s in (0, 1)
        ],
    )
    collect(sweep_dir)
    rows = hparams_rows(sweep_dir / "hparams")
    runs = {k: v for k, v in rows.items() if k.startswith("runs/")}
    assert sorted(runs) == [
        "runs/backbone=dino/seed=0",
        "runs/backbone=dino/seed=1",
        "runs/backbone=mae/seed=0",
        "runs/backbone=mae/seed=1",
    ]
    mae1 = runs["runs/backbone=mae/seed=1"]
    assert mae1["hparams"]["point"] == "backbone=mae" and mae1["hparams"]["seed"] == 1
    assert mae1["hparams"]["state"] == "done" and mae1["scalars"]["val/PQ"] == 20.0
    assert runs["runs/backbone=dino/seed=0"]["hparams"]["state"] == "running"
    assert runs["runs/backbone=dino/seed=1"]["hparams"]["state"] == "pending"
    mae = rows["points/backbone=mae"]
    assert mae["hparams"]["kind"] == "point" and mae["hparams"]["n"] == 2
    assert mae["scalars"]["val/PQ"] == pytest.approx(15.0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spread = EventAccumulator(str(sweep_dir / "hparams" / "points" / "backbone=mae")).Reload()
    assert spread.Scalars("std/PQ")[0].value == pytest.approx(math.sqrt(50.0), rel=1e-5)  # (5^2 + 5^2) / 1
    assert spread.Scalars("ci95/PQ")[0].value == pytest.approx(T_975_1 * math.sqrt(50.0) / math.sqrt(2.0), rel=1e-5)
    # collecting again replaces the view whole (one session per run, none left over)
    collect(sweep_dir)
    assert sorted(hparams_rows(sweep_dir / "hparams")) == sorted(rows)


def test_a_sweep_run_with_command_line_seeds_is_collected_with_them(tmp_path, capsys):
    sweep = tmp_path / "one.yaml"
    sweep.write_text(
        f"base: {REPO / 'experiments' / 'quickstart.yaml'}\noverrides: [run.root={tmp_path / 'runs'}]\ngrid: {{optim.lr: [0.001]}}\n"
    )
    from odise_pl.sweeps.plan import plan
    from odise_pl.sweeps.plan_file import entries_of, write_plan

    planned = plan(sweep, [], seeds=[4, 2])  # what `odise-pl sweep -c one.yaml --seeds 4,2` records
    write_plan(planned[0].sweep_dir, entries_of(planned))
    fabricate_run(tmp_path / "runs" / "one", "lr=0.001/seed=2", {"PQ": 1.0})
    _, records = collect(sweep, hparams_view=False)
    assert [(r.entry.name, r.state) for r in records] == [
        ("lr=0.001/seed=4", "pending"),
        ("lr=0.001/seed=2", "done"),
    ]
