"""Fixtures of the launcher tests: a reachable SLURM (tools/local_slurm.sh), tiny sweeps written per test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"

#: a run of a few steps on 64x64 generated scenes (the tiny sweep's settings, shorter)
TINY = [
    *micro_run(None, steps=3),
    "model.mask_generator.num_queries=8",
    "model.mask_generator.enc_layers=1",
    "logging.num_vis_images=1",
    "checkpoint.every_n_steps=0",
]
GOOD = "{name: clip, out_channels: 32}"
BAD = "{name: mae, pretrained: /nonexistent/mae-weights, out_channels: 32}"  # fails when the run builds its model


def write_sweep(path: Path, name: str, backbones: list[str], extra: list[str] = (), launcher: str = "") -> Path:
    """A sweep file over ``model.backbone`` on the quick-start experiment."""
    overrides = "".join(f"  - '{o}'\n" for o in [*TINY, *extra])
    grid = "".join(f"    - {b}\n" for b in backbones)
    path.write_text(f"name: {name}\nbase: {QUICKSTART}\noverrides:\n{overrides}grid:\n  model.backbone:\n{grid}" + launcher)
    return path


@pytest.fixture
def slurm_cluster() -> None:
    """Skip (or, in CI, fail) without a SLURM that answers: start one with tools/local_slurm.sh start."""
    required = bool(os.environ.get("CI")) or os.environ.get("ODISE_PL_REQUIRE_SLURM") == "1"
    problem = ""
    if shutil.which("sbatch") is None:
        problem = "sbatch not found: install SLURM (apt-get install slurm-wlm munge) and run tools/local_slurm.sh start"
    else:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split()):
            problem = f"no SLURM node answers (sinfo: {out.stdout.strip() or out.stderr.strip()}): tools/local_slurm.sh start"
    if problem and required:
        pytest.fail(f"SLURM is required here (CI or ODISE_PL_REQUIRE_SLURM=1): {problem}")
    if problem:
        pytest.skip(problem)
