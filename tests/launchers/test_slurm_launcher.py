"""``--launcher slurm`` on a real (local, single-node) SLURM: tools/local_slurm.sh start.

* the tiny backbone sweep: one job per run (a job array), every job finishes, every run has final metrics;
* preemption: the signal SLURM sends before a time limit (``scancel --signal=USR2``) mid-training makes the
  run write ``last.ckpt`` and requeue itself; the requeued job resumes and ends with exactly the weights of
  an uninterrupted job of the same run. A failing run in the same sweep is reported, the other goes on;
* a resource request SLURM refuses (no such partition) is an error with sbatch's own message.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from odise_pl.cli import main
from odise_pl.launchers.records import latest_launches
from odise_pl.launchers.slurm import wait_for_jobs
from tests.launchers.conftest import BAD, GOOD, REPO, write_sweep
from tests.micro_run import shorter_sweep

pytestmark = pytest.mark.usefixtures("slurm_cluster")
TINY_SWEEP = REPO / "experiments" / "sweeps" / "backbones_tiny.yaml"


def _step_of(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return -1


def test_a_partition_slurm_rejects_is_an_error_with_its_message(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", "s", [GOOD])
    assert (
        main(["sweep", "-c", str(sweep), "--launcher", "slurm", "--partition", "no_such_partition", f"run.root={tmp_path / 'runs'}"]) == 2
    )
    err = capsys.readouterr().err
    assert "SLURM refused the jobs of sweep s" in err and "invalid partition" in err.lower()
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "s" / "launches").exists()  # nothing recorded for a refused submission


@pytest.mark.slow  # six tiny jobs, two at a time on 2 cores: ~40-60 s
def test_the_tiny_backbone_sweep_runs_one_job_per_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", "-c", str(TINY_SWEEP), "--launcher", "slurm", "--wait", *shorter_sweep(tmp_path, steps=3), "logging.tensorboard=false"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    sweep_dir = runs / "backbones_tiny"
    launches = latest_launches(sweep_dir)
    assert len(launches) == 6 and len({e["job_id"] for e in launches.values()}) == 6
    array = {e["job_id"].split("_")[0] for e in launches.values()}
    assert len(array) == 1  # one job array
    for name, entry in launches.items():
        assert f"{name}: job {entry['job_id']}, run directory {sweep_dir / name}/version_*, log {entry['log']}" in out
        final = json.loads((sweep_dir / name / "version_0" / "metrics.json").read_text())["final"]
        assert 0.0 <= final["PQ"] <= 100.0 and "mIoU" in final
        assert Path(entry["log"]).is_file()
    assert main(["sweep", "status", "-c", str(TINY_SWEEP), f"run.root={runs}"]) == 0
    assert "0 pending, 0 running, 6 done, 0 failed" in capsys.readouterr().out
    # collect rebuilds the summary from the run directories: every run done, with its metrics
    assert main(["sweep", "collect", "-c", str(TINY_SWEEP), f"run.root={runs}"]) == 0
    collected = capsys.readouterr().out
    assert "6 done" in collected
    rows = {r["run"]: r for r in csv.DictReader((sweep_dir / "summary.csv").read_text().splitlines())}
    assert set(rows) == set(launches) and all(r["state"] == "done" and r["PQ"] != "" for r in rows.values())
    # launched again: every run is finished, nothing is submitted, the first record stays
    assert main(argv) == 0
    assert capsys.readouterr().out.count(": finished before (") == 6
    assert sorted(p.name for p in (sweep_dir / "launches").iterdir()) == ["launch_000.json"]


MAX_STEPS = 12


@pytest.mark.slow  # two tiny trainings of 12 steps in parallel jobs, one requeued: ~40-80 s
def test_a_preempted_job_checkpoints_requeues_and_ends_with_the_uninterrupted_weights(tmp_path, capsys):
    extra = [
        f"trainer.max_steps={MAX_STEPS}",
        f"trainer.val_check_interval={MAX_STEPS}",
        "checkpoint.every_n_steps=2",
        f"data.root={tmp_path / 'data'}",
    ]
    reference = write_sweep(tmp_path / "reference.yaml", "reference", [GOOD], extra)
    preempted = write_sweep(tmp_path / "preempted.yaml", "preempted", [GOOD, BAD], extra)
    runs = tmp_path / "runs"
    for sweep in (reference, preempted):
        assert main(["sweep", "-c", str(sweep), "--launcher", "slurm", f"run.root={runs}"]) == 0
    jobs = {
        **{f"reference/{k}": v for k, v in latest_launches(runs / "reference").items()},
        **{f"preempted/{k}": v for k, v in latest_launches(runs / "preempted").items()},
    }
    target = jobs["preempted/backbone=clip"]
    last = runs / "preempted" / "backbone=clip" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while _step_of(last) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    step_before = _step_of(last)
    assert 2 <= step_before < MAX_STEPS, "no mid-training checkpoint to preempt at"
    subprocess.run(["scancel", "--signal=USR2", target["job_id"]], check=True)
    wait_for_jobs(list(jobs.values()), poll_s=1.0)

    log = Path(target["log"]).read_text()
    assert "odise-pl: got SIGUSR2: last.ckpt at the end of this step, then requeue" in log, log[-3000:]
    assert "; requeueing" in log and f"resuming from {last}" in log
    shown = subprocess.run(["scontrol", "show", "job", target["job_id"]], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown

    want = torch.load(
        runs / "reference" / "backbone=clip" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    got = torch.load(last, map_location="cpu", weights_only=True)
    assert want["global_step"] == got["global_step"] == MAX_STEPS
    assert want["state_dict"].keys() == got["state_dict"].keys()
    different = [k for k in want["state_dict"] if not torch.equal(want["state_dict"][k], got["state_dict"][k])]
    assert not different, f"preempted after step {step_before}; differing weights: {different[:5]}"
    assert sorted(p.name for p in last.parents[2].iterdir() if p.name.startswith("version_")) == ["version_0"]

    capsys.readouterr()
    assert main(["sweep", "status", "-c", str(preempted), f"run.root={runs}"]) == 0
    out = capsys.readouterr().out
    assert "0 pending, 0 running, 1 done, 1 failed" in out
    assert "backbone=mae__nonexistent_mae-weights  failed" in out and "mae-weights" in out.split("the end of its log")[1]
