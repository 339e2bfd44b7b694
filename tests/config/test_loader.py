"""Experiment files: _base_ inheritance, overrides, and the shape of the result."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ReadonlyConfigError

from odise_pl.config import instantiate_section, load_config, part_config, print_config, save_resolved
from odise_pl.errors import ConfigError
from tests.config.conftest import DummyBackboneConfig, DummyDataConfig


def test_minimal_file_fills_defaults(write):
    cfg = load_config(write("x.yaml", "seed: 3\n", parts=True))
    assert isinstance(cfg, DictConfig)
    assert cfg.seed == 3
    assert cfg.trainer.max_steps == 92000  # schema default
    assert cfg.model.backbone == {"name": "test_dummy_backbone", "t": 0, "width": 8, "levels": ["s2", "s3"]}
    assert cfg.model.supervision == {"name": "test_dummy_supervision"}
    assert list(cfg.data.keys())[0] == "name"


def test_single_base_and_precedence(write):
    write("base.yaml", "seed: 1\ntrainer: {max_steps: 10, precision: bf16-mixed}\n", parts=True)
    cfg = load_config(write("x.yaml", "_base_: base.yaml\ntrainer: {max_steps: 20}\n"))
    assert cfg.seed == 1
    assert cfg.trainer.max_steps == 20  # the including file wins
    assert cfg.trainer.precision == "bf16-mixed"  # mappings merge key by key


def test_list_of_bases_later_wins(write):
    write("a.yaml", "seed: 1\noptim: {lr: 0.1, gamma: 0.5}\n", parts=True)
    write("b.yaml", "optim: {lr: 0.2}\n")
    cfg = load_config(write("x.yaml", "_base_: [a.yaml, b.yaml]\n"))
    assert cfg.optim.lr == 0.2
    assert cfg.optim.gamma == 0.5
    assert cfg.seed == 1


def test_nested_bases_with_relative_paths(write):
    write("common/parts.yaml", "", parts=True)
    write("common/train.yaml", "_base_: parts.yaml\ntrainer: {max_steps: 5}\noptim: {milestones: [0.1]}\n")
    write("exp/sub/x.yaml", "_base_: ../../common/train.yaml\noptim: {milestones: [0.5, 0.9]}\n")
    cfg = load_config(write("exp/sub/x.yaml", "_base_: ../../common/train.yaml\noptim: {milestones: [0.5, 0.9]}\n"))
    assert cfg.trainer.max_steps == 5
    assert list(cfg.optim.milestones) == [0.5, 0.9]  # lists replace, never merge


def test_diamond_inheritance_is_not_a_cycle(write):
    write("root.yaml", "seed: 7\n", parts=True)
    write("l.yaml", "_base_: root.yaml\n")
    write("r.yaml", "_base_: root.yaml\n")
    assert load_config(write("x.yaml", "_base_: [l.yaml, r.yaml]\n")).seed == 7


def test_cycle_is_reported_with_the_chain(write):
    write("a.yaml", "_base_: b.yaml\n")
    write("b.yaml", "_base_: c.yaml\n")
    write("c.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"circular '_base_' chain: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml"):
        load_config(write("a.yaml", "_base_: b.yaml\n"))


def test_self_inclusion_is_a_cycle(write):
    with pytest.raises(ConfigError, match="circular"):
        load_config(write("a.yaml", "_base_: a.yaml\n"))


def test_missing_base_names_includer_and_path(write):
    path = write("exp/x.yaml", "seed: 1\n_base_: nothere/base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "x.yaml" in message and "'nothere/base.yaml'" in message and "(line 2)" in message


def test_bad_base_value(write):
    with pytest.raises(ConfigError, match="must be a file name or a list"):
        load_config(write("x.yaml", "_base_: {a: 1}\n"))


def test_missing_experiment_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a file"):
        load_config(tmp_path)


def test_dispatched_section_restarts_when_the_name_changes(write):
    write("parts.yaml", "", parts=True)
    write("base.yaml", "_base_: parts.yaml\nmodel: {backbone: {name: test_dummy_backbone, t: 5}}\n")
    cfg = load_config(write("x.yaml", "_base_: base.yaml\nmodel: {backbone: {name: test_dummy_backbone_b}}\n"))
    assert cfg.model.backbone == {"name": "test_dummy_backbone_b", "depth": 2}
    same = load_config(write("y.yaml", "_base_: base.yaml\nmodel: {backbone: {width: 3}}\n"))
    assert (same.model.backbone.t, same.model.backbone.width) == (5, 3)


# -- overrides -----------------------------------------------------------------------------
def test_dotlist_overrides(write):
    path = write("x.yaml", "trainer: {max_steps: 10}\n", parts=True)
    cfg = load_config(
        path,
        [
            "trainer.max_steps=100",
            "model.inference.classifier=ensemble",
            "optim.milestones=[0.5,0.9]",
            "model.backbone.levels=[s4]",
            "run.version=null",
            "model.mask_generator={num_queries: 7}",
        ],
    )
    assert cfg.trainer.max_steps == 100
    assert cfg.model.inference.classifier == "ensemble"
    assert list(cfg.optim.milestones) == [0.5, 0.9]
    assert list(cfg.model.backbone.levels) == ["s4"]
    assert cfg.run.version is None
    assert cfg.model.mask_generator.num_queries == 7 and cfg.model.mask_generator.hidden_dim == 256


def test_override_changing_the_part_applies_first(write):
    write("parts.yaml", "", parts=True)
    path = write("x.yaml", "_base_: parts.yaml\nmodel: {backbone: {t: 3}}\n")
    cfg = load_config(path, ["model.backbone.depth=4", "model.backbone.name=test_dummy_backbone_b"])
    assert cfg.model.backbone == {"name": "test_dummy_backbone_b", "depth": 4}
    kept = load_config(path, ["model.backbone.name=test_dummy_backbone"])  # same part: options kept
    assert kept.model.backbone.t == 3
    whole = load_config(path, ["model.backbone={name: test_dummy_backbone_b, depth: 5}"])
    assert whole.model.backbone == {"name": "test_dummy_backbone_b", "depth": 5}


@pytest.mark.parametrize(
    "override, match",
    [
        ("trainer.max_steps", "not of the form key=value"),
        ("=5", "not a dotted key"),
        ("trainer..max_steps=5", "not a dotted key"),
        ("optim.betas[0]=0.5", "set the whole list"),
        ("+trainer.foo=1", "Hydra-style"),
        ("optim.milestones=[0.5,", r"override 'optim.milestones=\[0.5,': the value is not valid YAML"),
        ("trainer.max_steps=abc", r"override 'trainer.max_steps=abc': wrong type .*expected int"),
        ("trainer.max_stepz=3", r"override 'trainer.max_stepz=3': unknown key .*'trainer.max_steps'"),
    ],
)
def test_bad_overrides_name_the_override(write, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write("x.yaml", "", parts=True), [override])


def test_override_through_a_value_is_refused(write):
    with pytest.raises(ConfigError, match="'seed' is 3, not a section"):
        load_config(write("x.yaml", "seed: 3\n", parts=True), ["seed.x=1"])


# -- the result ----------------------------------------------------------------------------
def test_result_is_read_only_and_resolved(write):
    cfg = load_config(write("x.yaml", "trainer: {max_steps: 8}\noptim: {warmup_steps: '${trainer.max_steps}'}\n", parts=True))
    assert cfg.optim.warmup_steps == 8
    assert "${" not in OmegaConf.to_yaml(cfg)
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 1
    with pytest.raises(ReadonlyConfigError):
        cfg.model.backbone.t = 1


def test_print_and_save_resolved_round_trip(write, tmp_path):
    path = write("x.yaml", "seed: 5\n", parts=True)
    text = print_config(path, ["trainer.max_steps=3"])
    assert yaml.safe_load(text)["trainer"]["max_steps"] == 3
    out = save_resolved(load_config(path, ["trainer.max_steps=3"]), tmp_path / "run" / "config.yaml")
    assert out.read_text() == text
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temporary file left
    assert load_config(out) == load_config(path, ["trainer.max_steps=3"])  # a resolved file loads again


def test_instantiate_section_and_part_config(write):
    cfg = load_config(write("x.yaml", "", parts=True), ["data.batch_size=4"])
    data = instantiate_section(cfg.data, DummyDataConfig)
    assert data == DummyDataConfig(batch_size=4)
    entry, options = part_config(cfg, "model.backbone")
    assert entry.name == "test_dummy_backbone" and options == DummyBackboneConfig()
    entry, options = part_config(cfg, "model.supervision")
    assert entry.name == "test_dummy_supervision" and options is None
