"""Sweep files: grid and zip expansion, run names, and errors naming the run."""

from __future__ import annotations

import pytest

from odise_pl.config import expand_sweep, load_config
from odise_pl.errors import ConfigError


@pytest.fixture
def base(write):
    return write("experiments/base.yaml", "trainer: {max_steps: 10}\n", parts=True)


def test_grid_is_a_cartesian_product(write, base):
    sweep = write(
        "experiments/sweeps/s.yaml",
        """\
        base: ../base.yaml
        overrides: [trainer.max_steps=5]
        grid:
          model.inference.classifier: [diffusion, clip, ensemble]
          model.backbone.t: [0, 100]
        """,
    )
    runs = expand_sweep(sweep)
    assert len(runs) == 6
    assert [r.name for r in runs[:2]] == ["classifier=diffusion,t=0", "classifier=diffusion,t=100"]
    assert runs[0].overrides == ["trainer.max_steps=5", "model.inference.classifier=diffusion", "model.backbone.t=0"]
    assert runs[0].base == base and runs[0].sweep == "s"
    assert runs[-1].values == {"model.inference.classifier": "ensemble", "model.backbone.t": 100}
    cfg = load_config(runs[-1].base, runs[-1].overrides)
    assert (cfg.trainer.max_steps, cfg.model.backbone.t) == (5, 100)


def test_zip_pairs_values_and_combines_with_the_grid(write, base):
    sweep = write(
        "experiments/s.yaml",
        """\
        name: ensemble_weights
        base: base.yaml
        grid: {seed: [1, 2]}
        zip:
          model.inference.alpha: [0.2, 0.3, 0.4]
          model.inference.beta: [0.6, 0.7, 0.8]
        """,
    )
    runs = expand_sweep(sweep)
    assert len(runs) == 6
    assert runs[0].name == "seed=1,alpha=0.2,beta=0.6"
    assert runs[5].name == "seed=2,alpha=0.4,beta=0.8"
    assert {r.sweep for r in runs} == {"ensemble_weights"}


def test_names_are_filesystem_safe_and_unique(write, base):
    sweep = write(
        "experiments/s.yaml",
        """\
        base: base.yaml
        grid:
          model.backbone.name: [test_dummy_backbone, test_dummy_backbone_b]
          run.name: ["a/b", "a b", "a_b"]
          optim.milestones: [[0.5, 0.9]]
        """,
    )
    runs = expand_sweep(sweep)
    names = [r.name for r in runs]
    assert len(set(names)) == len(names) == 6
    assert names[0] == "backbone=test_dummy_backbone,run=a_b,milestones=0.5_0.9"
    assert names[1] == names[0] + "-2"
    assert all("/" not in n and " " not in n for n in names)
    cfg = load_config(runs[3].base, runs[3].overrides)
    assert cfg.run.name == "a/b" and cfg.model.backbone.name == "test_dummy_backbone_b"


def test_values_that_look_like_other_types_stay_strings(write, base):
    sweep = write(
        "experiments/s.yaml",
        """\
        base: base.yaml
        grid: {run.name: ["1e-4", "true", "null", "x: y", "[1]"]}
        """,
    )
    names = [load_config(r.base, r.overrides).run.name for r in expand_sweep(sweep)]
    assert names == ["1e-4", "true", "null", "x: y", "[1]"]


def test_no_grid_is_one_run(write, base):
    runs = expand_sweep(write("experiments/s.yaml", "base: base.yaml\noverrides: [seed=3]\n"))
    assert [(r.name, r.overrides) for r in runs] == [("s", ["seed=3"])]


def test_zip_length_mismatch_names_keys_and_lengths(write, base):
    sweep = write(
        "experiments/s.yaml",
        """\
        base: base.yaml
        zip:
          model.inference.alpha: [0.2, 0.3]
          model.inference.beta: [0.6]
        """,
    )
    with pytest.raises(ConfigError, match=r"'model.inference.alpha' has 2, 'model.inference.beta' has 1"):
        expand_sweep(sweep)


@pytest.mark.parametrize(
    "text, match",
    [
        ("base: base.yaml\ngird: {seed: [1]}\n", r"unknown sweep key 'gird' \(line 2\)\. Did you mean 'grid'\?"),
        ("grid: {seed: [1]}\n", r"'base' must name the experiment file"),
        ("base: base.yaml\ngrid: {seed: 1}\n", r"'grid.seed' \(line 2\) must be a non-empty list"),
        ("base: base.yaml\ngrid: {seed: []}\n", r"must be a non-empty list"),
        ("base: base.yaml\ngrid: [seed]\n", r"'grid' \(line 2\) must map dotted keys"),
        ("base: base.yaml\noverrides: seed=1\n", r"'overrides' \(line 2\) must be a list"),
        ("base: base.yaml\ngrid: {seed: [1]}\nzip: {seed: [2]}\n", r"'seed' is in both"),
        ("- base\n", r"must be a mapping"),
        ("base: [\n", r"malformed YAML at line 2"),
    ],
)
def test_malformed_sweeps(write, base, text, match):
    with pytest.raises(ConfigError, match=match):
        expand_sweep(write("experiments/s.yaml", text))


def test_invalid_runs_are_named(write, base):
    sweep = write(
        "experiments/s.yaml",
        """\
        base: base.yaml
        grid: {model.backbone.t: [1, lots, many]}
        """,
    )
    with pytest.raises(ConfigError) as err:
        expand_sweep(sweep)
    message = str(err.value)
    assert "2 of 3 runs are invalid" in message
    assert "run 't=lots' (2/3): override 'model.backbone.t=lots': wrong type" in message
    assert len(expand_sweep(sweep, validate=False)) == 3


def test_missing_base_of_a_sweep(write):
    with pytest.raises(ConfigError, match="run 'seed=1' .*no such file"):
        expand_sweep(write("s.yaml", "base: nothere.yaml\ngrid: {seed: [1]}\n"))
