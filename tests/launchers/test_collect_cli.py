"""The seeds on the command line (``--seeds``) and the hparams row that groups a point's replicates."""

from __future__ import annotations

import shlex

import torch

from odise_pl.callbacks.hparams_table import run_hparams
from odise_pl.cli import main
from tests.launchers.fabricated_sweeps import REPO

SWEEP = str(REPO / "experiments" / "sweeps" / "backbones_tiny.yaml")


def test_dry_run_with_seeds_replicates_every_backbone(tmp_path, capsys):
    assert main(["sweep", "-c", SWEEP, "--dry-run", "--seeds", "0,1", f"run.root={tmp_path}"]) == 0
    lines = [shlex.split(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 12
    names = [next(a for a in args if a.startswith("run.name=")) for args in lines]
    assert names[:3] == [
        "run.name=backbone=clip/seed=0",
        "run.name=backbone=clip/seed=1",
        "run.name=backbone=clip_odise-tiny-vit/seed=0",
    ]
    assert "seed=1" in lines[1] and "seed=0" in lines[0]
    assert not (tmp_path / "backbones_tiny").exists()


def test_bad_seeds_on_the_command_line(capsys):
    assert main(["sweep", "-c", SWEEP, "--dry-run", "--seeds", "0,zero"]) == 2
    assert "--seeds '0,zero': 'zero' is not an integer" in capsys.readouterr().err
    assert main(["sweep", "-c", SWEEP, "--dry-run", "--seeds", "0", "seed=3"]) == 2
    assert "override 'seed=3' sets 'seed', which the sweep" in capsys.readouterr().err


def test_the_hparams_row_names_the_point_and_the_seed():
    config = {"seed": 2, "run": {"name": "backbone=mae/seed=2"}, "model": {"backbone": {"name": "mae"}}}
    row = run_hparams(torch.nn.Module(), config)
    assert (row["run"], row["point"], row["seed"], row["backbone"]) == (
        "backbone=mae/seed=2",
        "backbone=mae",
        2,
        "mae",
    )
    row = run_hparams(torch.nn.Module(), {"seed": 42, "run": {"name": "backbone=mae"}})
    assert (row["point"], row["seed"]) == ("backbone=mae", 42)


def test_a_failed_run_is_recorded_for_collect_and_cleared_when_retried(tmp_path, monkeypatch):
    import json

    from odise_pl.engine import fit as engine_fit
    from odise_pl.launchers.inline import run_inline
    from odise_pl.sweeps.collect import collect
    from odise_pl.sweeps.plan import plan
    from odise_pl.sweeps.summary import write_sweep_summary

    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        f"base: {REPO / 'experiments' / 'quickstart.yaml'}\noverrides: [run.root={tmp_path}]\ngrid: {{optim.lr: [0.001, 0.002]}}\n"
    )
    broken = {"lr=0.002"}

    def fake_fit(cfg, ckpt_path=None, **_):  # stands in for training: a finished run directory, or an error
        if cfg.run.name in broken:
            raise RuntimeError("out of memory")
        run_dir = tmp_path / "s" / cfg.run.name / "version_0"
        run_dir.mkdir(parents=True)
        results = {"run_dir": str(run_dir), "final": {"PQ": 3.0}}
        (run_dir / "metrics.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr(engine_fit, "fit", fake_fit)
    planned = plan(sweep, [])
    assert run_inline(planned) == 1
    _, records = collect(sweep, hparams_view=False)
    assert [(r.entry.name, r.state, r.detail) for r in records] == [
        ("lr=0.001", "done", ""),
        ("lr=0.002", "failed", "RuntimeError: out of memory"),
    ]
    broken.clear()
    planned = plan(sweep, [])
    assert run_inline(planned) == 0
    write_sweep_summary(planned)
    assert not (tmp_path / "s" / "lr=0.002" / "failed.json").exists()
    _, records = collect(sweep, hparams_view=False)
    assert [r.state for r in records] == ["done", "done"]


def test_the_quick_backbone_sweep_expands_to_every_tiny_backbone():
    from odise_pl.config import expand_sweep, load_config

    quick = expand_sweep(REPO / "experiments" / "sweeps" / "backbones_quick.yaml")
    tiny = expand_sweep(SWEEP, validate=False)
    assert [r.name for r in quick] == [r.name for r in tiny]
    cfg = load_config(quick[0].base, quick[0].overrides)
    assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval, cfg.optim.lr) == (300, 100, 2.0e-3)
    assert [r.name for r in expand_sweep(REPO / "experiments" / "sweeps" / "backbones_quick.yaml", validate=False, seeds=[0, 1, 2])][
        :3
    ] == ["backbone=clip/seed=0", "backbone=clip/seed=1", "backbone=clip/seed=2"]
