"""``odise-pl sweep`` on the tiny backbone sweep (issue #4): one run per backbone, start to finish.

The hparams rows are read back from the TensorBoard event files; the summary table from the
sweep directory; a second invocation skips the finished runs and finishes an unfinished one.
"""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest

from odise_pl.cli import main
from tests.micro_run import shorter_sweep

REPO = Path(__file__).resolve().parents[2]
SWEEP = str(REPO / "experiments" / "sweeps" / "backbones_tiny.yaml")
RUNS = ["backbone=clip", "backbone=clip_odise-tiny-vit", "backbone=mae", "backbone=dino", "backbone=dino_v1", "backbone=diffusion_unet"]


def _overrides(tmp_path: Path) -> list[str]:  # shorter still than the sweep file, for a shared CPU
    return shorter_sweep(tmp_path, steps=3)


def hparams_rows(log_dir: Path) -> dict[str, dict]:
    """``{run (directory relative to log_dir): {"hparams": {...}, "scalars": {tag: last value}}}``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    rows: dict[str, dict] = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        row = rows.setdefault(str(path.parent.relative_to(log_dir)), {"hparams": None, "scalars": {}})
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        hp = data.session_start_info.hparams
                        row["hparams"] = {k: (v.string_value or v.number_value) for k, v in hp.items()}
                elif value.metadata.plugin_data.plugin_name == "scalars" and value.tag.startswith("val/"):
                    row["scalars"][value.tag] = float(tensor_util.make_ndarray(value.tensor))
    return {run: row for run, row in rows.items() if row["hparams"] is not None}


def test_dry_run_prints_one_fit_command_per_backbone(tmp_path, capsys):
    assert main(["sweep", "-c", SWEEP, "--dry-run", *_overrides(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(RUNS)
    for line, name in zip(lines, RUNS):
        args = shlex.split(line)
        assert args[:3] == ["odise-pl", "fit", "-c"] and args[3].endswith("quickstart.yaml")
        assert f"run.name={name}" in args and f"run.root={tmp_path / 'runs' / 'backbones_tiny'}" in args
        assert "trainer.max_steps=3" in args and any(a.startswith("model.backbone={name: ") for a in args)
    assert not (tmp_path / "runs").exists()


def test_a_cli_override_of_a_varied_key_is_refused(tmp_path, capsys):
    assert main(["sweep", "-c", SWEEP, "--dry-run", "model.backbone={name: mae}"]) == 2
    assert "varies" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_backbone_sweep_end_to_end_then_rerun(tmp_path, capsys):
    overrides = _overrides(tmp_path)
    assert main(["sweep", "-c", SWEEP, *overrides]) == 0
    sweep_dir = tmp_path / "runs" / "backbones_tiny"

    # summary table: one row per backbone, all done, with final metrics and parameter counts
    with open(sweep_dir / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == RUNS
    assert all(r["status"] == "done" for r in table)
    for r in table:
        assert 0.0 <= float(r["PQ"]) <= 100.0 and 0.0 <= float(r["mIoU"]) <= 100.0
        assert float(r["params_trainable_M"]) > 0 and float(r["backbone_frozen_M"]) > 0
    assert (sweep_dir / "summary.md").read_text().count("| backbone=") == len(RUNS)

    # TensorBoard: one hparams row per run, named after its backbone, with its final metrics
    rows = hparams_rows(sweep_dir)
    assert sorted(run.split("/")[0] for run in rows) == sorted(RUNS)
    backbones = {run.split("/")[0]: row["hparams"]["backbone"] for run, row in rows.items()}
    assert backbones["backbone=mae"] == "mae" and backbones["backbone=dino_v1"] == "dino"
    assert set(backbones.values()) == {"clip", "mae", "dino", "diffusion_unet"}
    for run, row in rows.items():
        assert row["hparams"]["run"] == run.split("/")[0]
        assert row["hparams"]["params_frozen_M"] > 0
        final = json.loads((sweep_dir / run.split("/")[0] / "version_0" / "metrics.json").read_text())["final"]
        for tag in ("val/PQ", "val/SQ", "val/RQ", "val/mIoU"):
            assert row["scalars"][tag] == pytest.approx(final[tag.split("/")[1]], abs=1e-4), (run, tag)

    # re-run: finished runs are skipped; a run without final metrics is trained to its end again
    unfinished = sweep_dir / "backbone=mae" / "version_0"
    for metrics in unfinished.glob("metrics*"):
        metrics.unlink()
    capsys.readouterr()
    assert main(["sweep", "-c", SWEEP, *overrides]) == 0
    out = capsys.readouterr().out
    assert out.count(": finished before (") == len(RUNS) - 1
    with open(sweep_dir / "summary.csv") as f:
        statuses = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert statuses.pop("backbone=mae") == "done"
    assert set(statuses.values()) == {"skipped (finished before)"}
