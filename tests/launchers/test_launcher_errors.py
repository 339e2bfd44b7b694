"""Bad launcher input: a clear message, exit code 2, no traceback (no SLURM needed)."""

from __future__ import annotations

import pytest

from odise_pl.cli import main
from tests.launchers.conftest import GOOD, REPO, write_sweep


def test_an_unknown_launcher_flag_names_the_choices(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD])
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "-c", str(sweep), "--launcher", "kubernetes"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'kubernetes'" in err and "'inline', 'local', 'slurm'" in err


def test_an_unknown_launcher_in_the_sweep_file_names_the_file_line_and_choices(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD], launcher="launcher:\n  name: slrum\n")
    assert main(["sweep", "-c", str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "s.yaml: launcher (line" in err and "unknown launcher 'slrum' (did you mean 'slurm'?)" in err
    assert "inline, local, slurm" in err and "Traceback" not in err


def test_an_unknown_launcher_key_and_a_bad_value_are_named(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD], launcher="launcher:\n  name: slurm\n  partiton: gpu\n")
    assert main(["sweep", "-c", str(sweep), "--dry-run"]) == 2
    assert "unknown key 'partiton'. Did you mean 'partition'?" in capsys.readouterr().err
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD], launcher="launcher:\n  name: slurm\n  nodes: 0\n")
    assert main(["sweep", "-c", str(sweep), "--dry-run"]) == 2
    assert "'nodes' must be at least 1, got 0" in capsys.readouterr().err


def test_the_sweep_file_launcher_sets_resources_and_the_flag_wins(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD], launcher="launcher: {name: slurm, nodes: 2, gpus_per_node: 4}\n")
    assert main(["sweep", "-c", str(sweep), "--dry-run", f"run.root={tmp_path}"]) == 0
    line = capsys.readouterr().out
    assert "trainer.num_nodes=2" in line and "trainer.devices=4" in line
    assert main(["sweep", "-c", str(sweep), "--dry-run", "--gpus-per-node", "2", f"run.root={tmp_path}"]) == 0
    assert "trainer.devices=2" in capsys.readouterr().out
    assert main(["sweep", "-c", str(sweep), "--dry-run", "--launcher", "inline", f"run.root={tmp_path}"]) == 0
    assert "trainer.devices" not in capsys.readouterr().out  # inline: the experiment's own trainer


@pytest.mark.parametrize("target", ["folder", "experiment", "missing"])
def test_status_of_something_that_is_not_a_sweep(tmp_path, capsys, target):
    path = {"folder": tmp_path, "experiment": REPO / "experiments" / "quickstart.yaml", "missing": tmp_path / "nope.yaml"}[target]
    assert main(["sweep", "status", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path).split("/")[-1] in err and "Traceback" not in err
    assert {"folder": "is not a file", "experiment": "is not a sweep file", "missing": "no such file"}[target] in err


def test_status_of_a_sweep_never_launched_is_pending(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD, "{name: mae, pretrained: null, out_channels: 32}"])
    assert main(["sweep", "status", "-c", str(sweep), f"run.root={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "backbone=clip  pending   not started" in out and "2 pending, 0 running, 0 done, 0 failed" in out
