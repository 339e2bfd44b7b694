"""The strategy of ``examples/external_strategy/`` (outside the package) through the command line
(docs/supervision.md; issue #15, item 7): ``odise-pl fit`` in a new process, and the sweep
that sets it against the built-in one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "external_strategy"
STRATEGY_FILE = str((EXAMPLE / "my_strategy.py").resolve())


@pytest.mark.slow  # one tiny training in a new process (about 45 s of CPU time, more wall time on shared cores)
def test_fit_trains_the_strategy_named_by_imports_in_a_new_process(tmp_path):
    overrides = [
        *micro_run(tmp_path, steps=2, num_train=4),
        "data.global_batch_size=null",
        "model.backbone={name: clip, out_channels: 32}",
        "checkpoint.export_safetensors=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "odise_pl.cli", "fit", "-c", str(EXAMPLE / "experiment.yaml"), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "external_strategy" / "version_0"
    assert f"run directory: {run_dir}" in done.stdout

    assert "PQ" in json.loads((run_dir / "metrics.json").read_text())["final"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "supervision.text_proj.weight" in state and "supervision.void_embed" in state

    # the run's config.yaml names the file absolutely, so it loads again from anywhere (here: a new process)
    from odise_pl.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    assert list(cfg.imports) == [STRATEGY_FILE]
    assert cfg.model.supervision.name == "fixed_scale_label" and cfg.model.supervision.scale == 20.0


def test_the_sweep_reaches_every_run_with_the_imports(capsys):
    from odise_pl.cli import main
    from odise_pl.sweeps.plan import plan

    sweep = EXAMPLE / "sweep.yaml"
    assert main(["sweep", "-c", str(sweep), "--dry-run"]) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 2
    assert all(c.startswith(f"odise-pl fit -c {EXAMPLE / 'experiment.yaml'} ") for c in commands), commands
    assert "model.supervision.name=category_label" in commands[0]
    assert "model.supervision.name=fixed_scale_label" in commands[1]

    planned = plan(sweep, [])
    assert [p.cfg.model.supervision.name for p in planned] == ["category_label", "fixed_scale_label"]
    assert all(list(p.cfg.imports) == [STRATEGY_FILE] for p in planned)
    assert "scale" not in planned[0].cfg.model.supervision  # the built-in one starts its section afresh
    assert planned[1].cfg.model.supervision.scale == 20.0


def test_a_sweep_over_the_external_strategy_checks_its_keys_in_every_run(tmp_path):
    from odise_pl.errors import ConfigError
    from odise_pl.sweeps.plan import plan

    sweep = tmp_path / "scales.yaml"
    sweep.write_text(f"base: {EXAMPLE / 'experiment.yaml'}\ngrid:\n  model.supervision.scale: [20.0, -1.0]\n")
    with pytest.raises(
        ConfigError,
        match=r"run 'scale=-1.0' \(2/2\).*'model.supervision.scale'.*must be > 0, "
        r"got -1.0",
    ):
        plan(sweep, [])
