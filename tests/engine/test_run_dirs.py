"""Every process of one multi-process launch writes into the same run directory when run.version is null."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from odise_pl.engine import run_dirs
from odise_pl.engine.run_dirs import RUN_DIR_ENV, run_dir_for
from odise_pl.errors import ConfigError
from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[2]
LAUNCH_VARS = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "WORLD_SIZE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "TORCHELASTIC_RUN_ID",
    RUN_DIR_ENV,
)


@pytest.fixture()
def env(monkeypatch):
    for key in LAUNCH_VARS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def cfg(root: Path):
    return OmegaConf.create({"run": {"root": str(root), "name": "exp", "version": None}})


def test_ranks_launched_by_lightning_inherit_the_choice(tmp_path, env):
    first = run_dir_for(cfg(tmp_path))
    assert first == tmp_path / "exp" / "version_0"
    first.mkdir(parents=True)  # rank 0 has written its config
    env.setenv(RUN_DIR_ENV, str(first))
    assert run_dir_for(cfg(tmp_path)) == tmp_path / "exp" / "version_1"  # rank 0 again: a new run
    env.setenv("LOCAL_RANK", "1")
    assert run_dir_for(cfg(tmp_path)) == first  # a rank it launched: the same directory
    other = cfg(tmp_path)
    other.run.name = "other"
    assert run_dir_for(other) == tmp_path / "other" / "version_0"  # another experiment ignores it


def test_independent_ranks_agree_through_the_job_id(tmp_path, env):
    env.setenv("SLURM_NTASKS", "2")
    env.setenv("SLURM_JOB_ID", "77")
    env.setenv("SLURM_PROCID", "0")
    chosen = run_dir_for(cfg(tmp_path))
    assert chosen == tmp_path / "exp" / "version_0" and chosen.is_dir()
    env.setenv("SLURM_PROCID", "1")
    assert run_dir_for(cfg(tmp_path)) == chosen  # version_0 exists, yet rank 1 does not move on
    env.setenv("SLURM_PROCID", "0")
    assert run_dir_for(cfg(tmp_path)) == chosen  # the job re-queued: its own directory (resumes)
    env.setenv("SLURM_JOB_ID", "78")
    assert run_dir_for(cfg(tmp_path)) == tmp_path / "exp" / "version_1"  # the next job: a new directory

    env.setenv("SLURM_JOB_ID", "79")
    env.setenv("SLURM_PROCID", "1")
    env.setattr(run_dirs, "CLAIM_TIMEOUT_S", 0.3)
    with pytest.raises(ConfigError, match=r"waited .* for rank 0 .*slurm-79\.0.*run.version=NAME"):
        run_dir_for(cfg(tmp_path))


def test_torchrun_without_a_rendezvous_id_must_name_the_run(tmp_path, env):
    env.setenv("WORLD_SIZE", "8")
    env.setenv("RANK", "0")
    env.setenv("TORCHELASTIC_RUN_ID", "none")
    with pytest.raises(ConfigError, match="run.version is null in a 8-process launch.*set run.version=NAME"):
        run_dir_for(cfg(tmp_path))
    env.setenv("TORCHELASTIC_RUN_ID", "job42")
    assert run_dir_for(cfg(tmp_path)) == tmp_path / "exp" / "version_0"
    named = cfg(tmp_path)
    named.run.version = "label_4x8"
    assert run_dir_for(named) == tmp_path / "exp" / "label_4x8"


@pytest.mark.ddp
@pytest.mark.slow  # a 2-process gloo DDP fit (~30 s on 2 cores)
def test_two_process_fit_with_null_version_writes_one_run_directory(tmp_path):
    overrides = [
        *micro_run(tmp_path, steps=2, num_train=4),
        "run.version=null",
        "data.batch_size=1",
        "data.eval_batch_size=1",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "checkpoint.every_n_steps=1",
        "model.mask_generator.enc_layers=1",
        "logging.tensorboard=true",
    ]
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_datamodule

    build_datamodule(load_config(REPO / "experiments" / "quickstart.yaml", overrides)).prepare_data()
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith(("MASTER_", "PL_"))}
    env["OMP_NUM_THREADS"] = "1"
    for _attempt in range(2):  # the second command starts a new run: version_1, again shared by both ranks
        proc = subprocess.run(
            [sys.executable, "-m", "odise_pl.cli", "fit", "-c", "experiments/quickstart.yaml", *overrides],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    runs = tmp_path / "runs" / "quickstart"
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["version_0", "version_1"]
    for run in runs.glob("version_*"):
        names = sorted(p.name for p in run.iterdir())
        assert "config.yaml" in names and "metrics.json" in names and (run / "checkpoints" / "last.ckpt").is_file()
        assert not [n for n in names if n.startswith(("config.1", "metrics.1"))], names  # rank 1 wrote nothing
