"""Fabricated sweep directories: the inputs of ``sweep collect`` / ``sweep plot`` without any training.

A run directory is what ``odise-pl fit`` leaves: ``version_0/config.yaml``, ``hparams.json`` and, once
finished, ``metrics.json`` with ``final`` metrics (optionally TensorBoard events with ``val/*`` scalars).
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fabricate_run(
    sweep_dir: Path,
    name: str,
    final: dict | None,
    *,
    backbone: str = "clip",
    curve: list[tuple[int, float]] | None = None,
) -> Path:
    """A run directory ``sweep_dir/name/version_0``; ``final=None``: started, not finished."""
    run_dir = sweep_dir / name / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"run: {{name: '{name}'}}\n")
    (run_dir / "hparams.json").write_text(
        json.dumps(
            {
                "run": name,
                "backbone": backbone,
                "params_trainable_M": 1.5,
                "params_frozen_M": 2.0,
                "backbone_frozen_M": 2.0,
            }
        )
    )
    if final is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"run_dir": str(run_dir), "final": final}))
    if curve:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
        for step, value in curve:
            writer.add_scalar("val/PQ", value, step)
            writer.add_scalar("val/mIoU", value + 1.0, step)
        writer.close()
    return run_dir


def make_sweep_file(tmp_path: Path) -> Path:
    """A sweep file over two learning rates with three seeds each, its runs under tmp_path/runs/lrs."""
    path = tmp_path / "lrs.yaml"
    path.write_text(
        f"name: lrs\nbase: {REPO / 'experiments' / 'quickstart.yaml'}\n"
        f"overrides: [run.root={tmp_path / 'runs'}]\n"
        "grid:\n  optim.lr: [0.001, 0.002]\nseeds: [0, 1, 2]\n"
    )
    return path
