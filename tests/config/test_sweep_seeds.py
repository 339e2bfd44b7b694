"""Sweep seeds (issue #16): every point replicated once per seed, and bad seeds named with file and key."""

from __future__ import annotations

import pytest

from odise_pl.config import expand_sweep, load_config
from odise_pl.config.sweep import parse_seeds, point_of
from odise_pl.errors import ConfigError


@pytest.fixture
def base(write):
    return write("experiments/base.yaml", "trainer: {max_steps: 10}\n", parts=True)


def test_seeds_replicate_every_point(write, base):
    sweep = write(
        "experiments/s.yaml",
        """\
        base: base.yaml
        grid: {model.backbone.t: [0, 100]}
        seeds: [3, 1, 2]
        """,
    )
    runs = expand_sweep(sweep)
    assert [r.name for r in runs] == [
        "t=0/seed=3",
        "t=0/seed=1",
        "t=0/seed=2",
        "t=100/seed=3",
        "t=100/seed=1",
        "t=100/seed=2",
    ]
    assert [r.point for r in runs] == ["t=0"] * 3 + ["t=100"] * 3
    assert [r.seed for r in runs] == [3, 1, 2, 3, 1, 2]
    assert runs[4].overrides == ["model.backbone.t=100", "seed=1"]
    assert runs[4].values == {"model.backbone.t": 100, "seed": 1}
    cfg = load_config(runs[4].base, runs[4].overrides)
    assert (cfg.seed, cfg.model.backbone.t) == (1, 100)


def test_without_seeds_a_run_is_its_own_point(write, base):
    runs = expand_sweep(write("experiments/s.yaml", "base: base.yaml\ngrid: {model.backbone.t: [0]}\n"))
    assert [(r.name, r.point, r.seed) for r in runs] == [("t=0", "t=0", None)]


def test_command_line_seeds_replace_the_files(write, base):
    sweep = write("experiments/s.yaml", "base: base.yaml\ngrid: {model.backbone.t: [0]}\nseeds: [0, 1, 2]\n")
    assert [r.name for r in expand_sweep(sweep, seeds=[7, 8])] == ["t=0/seed=7", "t=0/seed=8"]
    no_grid = write("experiments/one.yaml", "base: base.yaml\n")
    assert [(r.name, r.point) for r in expand_sweep(no_grid, seeds=[5])] == [("one/seed=5", "one")]


@pytest.mark.parametrize(
    "text, match",
    [
        ("seeds: 3\n", r"s\.yaml: 'seeds' \(line 3\) must be a non-empty list of integer seeds"),
        ("seeds: []\n", r"'seeds' \(line 3\) must be a non-empty list"),
        ("seeds: [0, x]\n", r"'seeds' \(line 3\): seed 'x' is not an integer"),
        ("seeds: [0, 1.5]\n", r"seed 1\.5 is not an integer"),
        ("seeds: [true]\n", r"seed True is not an integer"),
        ("seeds: [-1]\n", r"seed -1 is out of range; seeds are integers from 0 to 4294967295"),
        ("seeds: [0, 1, 0]\n", r"'seeds' \(line 3\): seed 0 is listed more than once"),
        (
            "seeds: [0]\noverrides: [seed=4]\n",
            r"'overrides' \(line 4\) sets 'seed=4', but the sweep has 'seeds'",
        ),
    ],
)
def test_bad_seeds_are_named(write, base, text, match):
    sweep = write("experiments/s.yaml", "base: base.yaml\ngrid: {model.backbone.t: [0]}\n" + text)
    with pytest.raises(ConfigError, match=match):
        expand_sweep(sweep)


def test_seed_varied_twice_is_refused(write, base):
    sweep = write("experiments/s.yaml", "base: base.yaml\ngrid: {seed: [1, 2]}\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"'seed' is varied by 'grid'/'zip' and by 'seeds'"):
        expand_sweep(sweep)


def test_parse_seeds_from_the_command_line():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 5 ") == [5]
    with pytest.raises(ConfigError, match=r"--seeds '0,a': 'a' is not an integer; give comma-separated"):
        parse_seeds("0,a")
    with pytest.raises(ConfigError, match=r"--seeds '1,1': seed 1 is listed more than once"):
        parse_seeds("1,1")


def test_point_of_a_run_name():
    assert point_of("backbone=mae/seed=12") == ("backbone=mae", 12)
    assert point_of("backbone=mae") == ("backbone=mae", None)
    assert point_of("a/b") == ("a/b", None)
    assert point_of("seed=3") == ("seed=3", None)  # a grid over 'seed' itself: no replicate suffix
