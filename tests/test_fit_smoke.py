"""End-to-end smoke test of ``odise-pl fit`` / ``validate`` (issue #2), and checkpoint contents.

One tiny run on generated data through the command line: the run directory holds the
resolved config, the metrics, the last checkpoint and TensorBoard events (scalars and
pictures); a second identical command gets the next version and leaves the first one
byte-identical; ``validate --ckpt`` reproduces the final metrics exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from odise_pl.cli import main
from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")


def _overrides(tmp_path: Path) -> list[str]:  # the TensorBoard events are checked here
    return [*micro_run(tmp_path, steps=4, num_train=16, num_val=4), "trainer.log_every_n_steps=1", "logging.tensorboard=true"]


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def _tensorboard_tags(directory: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: set[str] = set()
    images: set[str] = set()
    files = sorted(directory.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {directory}"
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        scalars |= {t for t in acc.Tags()["scalars"] if acc.Scalars(t)}
        images |= {t for t in acc.Tags()["images"] if acc.Images(t)}
    return scalars, images


def test_fit_twice_then_validate_through_the_cli(tmp_path, capsys):
    overrides = _overrides(tmp_path)
    assert main(["fit", "-c", QUICKSTART, *overrides]) == 0
    run0 = tmp_path / "runs" / "quickstart" / "version_0"
    assert f"run directory: {run0}" in capsys.readouterr().out

    for name in ("config.yaml", "metrics.json", "checkpoints/last.ckpt"):
        assert (run0 / name).is_file(), name
    assert "num_train: 16" in (run0 / "config.yaml").read_text()
    metrics = json.loads((run0 / "metrics.json").read_text())
    final = metrics["final"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU"):
        assert key in final, key
    ckpt = torch.load(run0 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4

    scalars, images = _tensorboard_tags(run0)
    assert {"val/PQ", "train/loss"} <= scalars, sorted(scalars)
    assert images, "no picture in the TensorBoard events"

    # The same command again: a new version; the first run's files stay byte-identical.
    before = _snapshot(run0)
    assert main(["fit", "-c", QUICKSTART, *overrides]) == 0
    run1 = run0.parent / "version_1"
    assert f"run directory: {run1}" in capsys.readouterr().out
    assert (run1 / "metrics.json").is_file() and (run1 / "checkpoints" / "last.ckpt").is_file()
    assert _snapshot(run0) == before
    assert sorted(p.name for p in run0.parent.iterdir()) == ["version_0", "version_1"]

    # validate --ckpt reproduces the final metrics of the run exactly.
    assert main(["validate", "-c", QUICKSTART, *overrides, "--ckpt", str(run0 / "checkpoints" / "last.ckpt")]) == 0
    evaluated = json.loads((run0 / "eval_validate_0.json").read_text())["validate"]
    assert evaluated == final


def test_pretrained_frozen_parts_stay_out_of_checkpoints(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_all
    from odise_pl.models import frozen

    cfg = load_config(QUICKSTART, [f"data.root={tmp_path / 'data'}", "data.num_train=2", "data.num_val=1", "data.num_workers=0"])
    _, model = build_all(cfg)
    clip = model.backbone.clip  # the process-wide shared CLIP: restore its marks afterwards
    saved = {name: clip.__dict__[name] for name in (frozen._FROZEN, frozen._PRETRAINED) if name in clip.__dict__}
    try:
        frozen.freeze(clip, pretrained=True)
        full = model.state_dict()
        assert any("clip" in k for k in full)
        checkpoint = {"state_dict": dict(full)}
        model.on_save_checkpoint(checkpoint)
        kept = checkpoint["state_dict"]
        assert not [k for k in kept if "clip" in k.lower()]
        assert set(kept) == {k for k in full if "clip" not in k.lower()}
        assert any(k.startswith("mask_generator.") for k in kept)

        # Restoring into a fresh module: the pretrained part is filled back in from the module
        # itself, so a strict load works and the trained weights come from the checkpoint.
        _, other = build_all(cfg)
        frozen.freeze(other.backbone.clip, pretrained=True)
        name, param = next((k, v) for k, v in kept.items() if k.startswith("mask_generator.") and v.is_floating_point())
        kept[name] = param + 1.0
        other.on_load_checkpoint(checkpoint)
        assert set(checkpoint["state_dict"]) == set(full)
        other.load_state_dict(checkpoint["state_dict"], strict=True)
        assert torch.equal(other.state_dict()[name], param + 1.0)
    finally:
        for attr in (frozen._FROZEN, frozen._PRETRAINED):
            clip.__dict__.pop(attr, None)
        clip.__dict__.update(saved)
