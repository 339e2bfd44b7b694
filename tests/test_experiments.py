"""The shipped experiments and sweeps (issue #7): recipes as the reference, every sweep command valid."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from odise_pl.cli import build_parser, main
from odise_pl.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))
REFERENCE = ["odise_label_coco", "odise_caption_coco"]


def test_every_experiment_file_is_valid():
    files = sorted(EXPERIMENTS.glob("*.yaml"))
    assert {f"{name}.yaml" for name in REFERENCE} | {"odise_label_tiny.yaml", "odise_caption_tiny.yaml"} <= {f.name for f in files}
    for path in files:
        load_config(path)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_recipes(name):
    cfg = load_config(EXPERIMENTS / f"{name}.yaml")
    t, d, o = cfg.trainer, cfg.data, cfg.optim
    assert d.global_batch_size == 64 == t.num_nodes * t.devices * d.batch_size * t.accumulate_grad_batches
    assert (d.name, d.crop_size, d.min_scale, d.max_scale) == ("coco_panoptic", 1024, 0.1, 2.0)
    assert (o.lr, o.weight_decay, o.clip_grad_norm, o.warmup_steps, o.warmup_factor, o.gamma) == (1e-4, 0.05, 0.01, 250, 0.067, 0.1)
    assert list(o.milestones) == pytest.approx([163889 / 184375, 177546 / 184375], abs=1e-12)
    assert t.max_steps == 92188 and t.precision == "16-mixed" and t.strategy == "ddp"
    assert d.vocabulary == "coco_panoptic_with_prompt_eng"
    assert (d.eval_short_side, d.eval_max_long_side, d.eval_batch_size) == (1024, 2560, 1)
    assert cfg.model.inference.instance_on is True
    b = cfg.model.backbone
    assert (b.name, b.pretrained, b.timestep, b.caption_mode) == ("diffusion_unet", "CompVis/stable-diffusion-v1-3", 0, "implicit")
    assert cfg.model.inference.classifier == "ensemble"
    supervision = {"odise_label_coco": "category_label", "odise_caption_coco": "caption_grounding"}[name]
    assert cfg.model.supervision.name == supervision


@pytest.mark.parametrize("name", REFERENCE)
def test_tiny_variants_keep_the_recipe_but_not_the_size(name):
    ref = load_config(EXPERIMENTS / f"{name}.yaml")
    tiny = load_config(EXPERIMENTS / f"{name.replace('_coco', '_tiny')}.yaml")
    for key in (
        "model.supervision",
        "model.inference",
        "model.backbone.name",
        "model.backbone.caption_mode",
        "model.backbone.timestep",
        "optim.weight_decay",
        "optim.milestones",
        "optim.gamma",
    ):
        get = lambda cfg, key=key: yaml.safe_dump(_select(cfg, key))  # noqa: E731
        assert get(tiny) == get(ref), key
    assert tiny.model.backbone.pretrained is None and tiny.model.clip.pretrained is None
    assert tiny.trainer.accelerator == "cpu" and tiny.trainer.max_steps <= 20
    assert tiny.trainer.precision == "32-true" and tiny.data.vocabulary is None
    assert tiny.data.name == "synthetic_shapes" and tiny.data.global_batch_size is not None


def _select(cfg, key):
    from omegaconf import OmegaConf

    return (
        OmegaConf.to_container(OmegaConf.select(cfg, key))
        if OmegaConf.is_config(OmegaConf.select(cfg, key))
        else OmegaConf.select(cfg, key)
    )


def test_every_ablation_sweep_has_a_tiny_variant_varying_the_same_keys():
    names = {p.stem for p in SWEEPS}
    for ablation in ("backbones", "caption_modes", "timesteps", "classifiers"):
        assert {ablation, f"{ablation}_tiny"} <= names
        full, tiny = (yaml.safe_load((EXPERIMENTS / "sweeps" / f"{n}.yaml").read_text()) for n in (ablation, f"{ablation}_tiny"))
        assert set(full.get("grid", {})) == set(tiny.get("grid", {}))
    caption = yaml.safe_load((EXPERIMENTS / "sweeps" / "caption_modes.yaml").read_text())
    assert caption["grid"]["model.backbone.caption_mode"] == ["empty", "caption", "implicit"]
    classifiers = yaml.safe_load((EXPERIMENTS / "sweeps" / "classifiers.yaml").read_text())
    assert classifiers["grid"]["model.inference.classifier"] == ["diffusion", "clip", "ensemble"]


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_dry_run_prints_fit_commands_that_pass_validation(sweep, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the printed commands are relative to the repository, as a user runs them
    assert main(["sweep", "-c", str(sweep.relative_to(REPO)), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    runs = yaml.safe_load(sweep.read_text())
    expected = 1
    for values in (runs.get("grid") or {}).values():
        expected *= len(values)
    zipped = list((runs.get("zip") or {}).values())  # rows taken together (methods.yaml)
    expected *= len(zipped[0]) if zipped else 1
    assert len(lines) == expected and len(set(lines)) == expected
    names = set()
    for line in lines:
        args = shlex.split(line)
        assert args[:2] == ["odise-pl", "fit"]
        parsed = build_parser().parse_args(args[1:])  # the command line parses...
        cfg = load_config(parsed.config, parsed.overrides)  # ...and its config validates
        names.add(cfg.run.name)
        assert Path(cfg.run.root).name == runs.get("name", sweep.stem)
    assert len(names) == expected
