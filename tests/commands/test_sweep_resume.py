"""A killed sweep, run again, finishes (issue #7): finished runs are not redone, the interrupted one resumes.

The sweep is a real ``odise-pl sweep`` process on a two-run copy of a shipped tiny sweep
(``classifiers_tiny.yaml``'s base, two classifiers).  It is SIGKILLed as soon as the second run has
written a checkpoint at step 2 (of 4); the same command again must skip the first run, resume the
second from that checkpoint in the same run directory, and write the summary table.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from odise_pl.cli import main
from odise_pl.models import clip_model
from tests.dying_fit import dying_command

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 4


def _step_of(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return -1


@pytest.mark.slow  # 20-60 s on 2 cores: two tiny diffusion trainings, one of them resumed
def test_a_killed_sweep_run_again_skips_finished_runs_and_resumes_the_interrupted_one(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: killed\nbase: {REPO / 'experiments' / 'odise_label_tiny.yaml'}\n"
        "grid:\n  model.inference.classifier: [diffusion, ensemble]\n"
    )
    argv = [
        "sweep",
        "-c",
        str(sweep),
        f"run.root={tmp_path / 'runs'}",
        f"data.root={tmp_path / 'data'}",
        f"trainer.max_steps={MAX_STEPS}",
        f"trainer.val_check_interval={MAX_STEPS}",
        "checkpoint.every_n_steps=1",
        "data.num_val=2",
        "trainer.log_every_n_steps=1",
    ]
    sweep_dir = tmp_path / "runs" / "killed"
    first, second = sweep_dir / "classifier=diffusion" / "version_0", sweep_dir / "classifier=ensemble" / "version_0"

    # The child SIGKILLs itself right after the second run's step-2 checkpoint is on disk (polling from
    # here raced with the step-3 and step-4 writes on a loaded machine).
    code = dying_command(argv, "'classifier=ensemble' in str(path) and checkpoint.get('global_step', 0) >= 2")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = child.communicate(timeout=300)
    killed_at = _step_of(second / "checkpoints" / "last.ckpt")
    assert child.returncode == -signal.SIGKILL, f"the sweep was not killed mid-run: {child.returncode}\n{err[-3000:]}"
    assert 2 <= killed_at < MAX_STEPS
    assert (first / "metrics.json").is_file() and not (second / "metrics.json").exists()
    first_metrics = (first / "metrics.json").read_text()
    first_mtime = (first / "metrics.json").stat().st_mtime_ns

    monkeypatch.setattr(clip_model, "_CACHE", {})
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/2] classifier=diffusion: finished before" in out
    assert f"[2/2] classifier=ensemble: resuming from {second / 'checkpoints' / 'last.ckpt'}" in out
    # the finished run was left alone; the interrupted one finished in its own directory
    assert (first / "metrics.json").stat().st_mtime_ns == first_mtime
    assert (first / "metrics.json").read_text() == first_metrics
    assert sorted(p.name for p in (sweep_dir / "classifier=ensemble").iterdir()) == ["version_0"]
    assert _step_of(second / "checkpoints" / "last.ckpt") == MAX_STEPS
    with open(sweep_dir / "summary.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows["classifier=diffusion"]["status"] == "skipped (finished before)"
    assert rows["classifier=ensemble"]["status"] == "done"
    assert rows["classifier=ensemble"]["run_dir"] == str(second) and rows["classifier=ensemble"]["PQ"] != ""
    assert "| classifier=ensemble | ensemble |" in (sweep_dir / "summary.md").read_text()
