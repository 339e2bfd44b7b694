"""``odise-pl sweep plot`` (issue #16): PNGs of final metrics (seed error bars) and validation curves,
never overwriting an earlier plot."""

from __future__ import annotations

from pathlib import Path

from odise_pl.atomic_files import next_free_path
from odise_pl.cli import main
from odise_pl.sweeps.plan_file import PlannedEntry, write_plan
from odise_pl.sweeps.plot import plot_sweep, validation_curves
from tests.launchers.fabricated_sweeps import fabricate_run

PNG = b"\x89PNG\r\n\x1a\n"


def _sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    entries = []
    for backbone, pqs in (("mae", (20.0, 24.0, 28.0)), ("dino", (30.0, 31.0, None))):
        for seed, pq in enumerate(pqs):
            name = f"backbone={backbone}/seed={seed}"
            entries.append(PlannedEntry(name, f"backbone={backbone}", seed, {"model.backbone": {"name": backbone}, "seed": seed}))
            final = None if pq is None else {"PQ": pq, "SQ": 70.0, "RQ": 30.0, "mIoU": pq + 5}
            fabricate_run(
                sweep_dir,
                name,
                final,
                backbone=backbone,
                curve=[(10, pq / 2 if pq else 1.0), (20, pq or 2.0)],
            )
    write_plan(sweep_dir, entries)
    return sweep_dir


def test_plot_writes_pngs_and_never_overwrites(tmp_path, capsys):
    sweep_dir = _sweep(tmp_path)
    out = tmp_path / "plots"
    assert main(["sweep", "plot", "-c", str(sweep_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "final_metrics.png"), str(out / "validation_curves.png")]
    first = {p: Path(p).read_bytes() for p in printed}
    assert all(data.startswith(PNG) and len(data) > 5000 for data in first.values())

    again = plot_sweep(sweep_dir, out=out)
    assert again == [out / "final_metrics.1.png", out / "validation_curves.1.png"]
    assert {p: Path(p).read_bytes() for p in printed} == first  # the earlier plots are untouched
    assert sorted(p.name for p in out.iterdir()) == [
        "final_metrics.1.png",
        "final_metrics.png",
        "validation_curves.1.png",
        "validation_curves.png",
    ]
    # default folder: SWEEP_DIR/plots
    assert plot_sweep(sweep_dir)[0] == sweep_dir / "plots" / "final_metrics.png"


def test_the_curves_come_from_the_runs_tensorboard_events(tmp_path):
    sweep_dir = _sweep(tmp_path)
    curves = validation_curves(sweep_dir / "backbone=mae" / "seed=1" / "version_0")
    assert curves["val/PQ"] == [(10, 12.0), (20, 24.0)]
    assert curves["val/mIoU"] == [(10, 13.0), (20, 25.0)]
    assert validation_curves(tmp_path / "no_run") == {}


def test_plots_are_numbered_by_the_engines_next_free_path(tmp_path):
    target = tmp_path / "a.png"
    assert next_free_path(target) == target
    target.write_bytes(b"x")
    (tmp_path / "a.1.png").write_bytes(b"x")
    assert next_free_path(target) == tmp_path / "a.2.png"


def test_plot_on_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    assert main(["sweep", "plot", "-c", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not a sweep directory" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
