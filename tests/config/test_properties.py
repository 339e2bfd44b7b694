"""Property-based tests: whatever the input, the loader answers with a config or a ConfigError."""

from __future__ import annotations

import itertools

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st
from omegaconf import DictConfig

from odise_pl.config import format_value, load_config
from odise_pl.config.yaml_source import parse_yaml
from odise_pl.errors import ConfigError
from tests.config.conftest import PARTS_YAML

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()

YAML_CHARS = "abcsedtrainmx_019.:-[]{},#&*!|>'\"%@`?$ \n\t\\"
KEY_PARTS = [
    "seed",
    "trainer",
    "max_steps",
    "model",
    "backbone",
    "name",
    "t",
    "width",
    "optim",
    "milestones",
    "data",
    "batch_size",
    "inference",
    "classifier",
    "run",
    "version",
    "mask_generator",
    "num_queries",
    "_base_",
    "x",
    "supervision",
]
VALUE_TEXTS = [
    "1",
    "-3",
    "0.5",
    "1e-4",
    "abc",
    "null",
    "true",
    "[0.5,0.9]",
    "{a: 1}",
    "{name: x}",
    "''",
    "???",
    "${seed}",
    "${nope}",
    "[",
    "a: b",
    "!!binary xx",
    "test_dummy_backbone_b",
    "{name: test_dummy_backbone_b, depth: 3}",
    "2001-01-01",
    ".inf",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("props")


def _load_file(folder, content: bytes, overrides=()):
    path = folder / f"f{next(_counter)}.yaml"
    path.write_bytes(content)
    try:
        return load_config(path, overrides)
    except ConfigError:
        return None


@SETTINGS
@given(content=st.binary(max_size=300))
def test_random_bytes_give_only_config_errors(folder, content):
    _load_file(folder, content)


@SETTINGS
@given(text=st.text(alphabet=YAML_CHARS, max_size=200))
def test_random_yaml_like_text_gives_only_config_errors(folder, text):
    _load_file(folder, text.encode())
    _load_file(folder, (PARTS_YAML + text).encode())


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True), st.text(alphabet="ab$.{}?:", max_size=8))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEY_PARTS), inner, max_size=3)),
    max_leaves=8,
)


@SETTINGS
@given(tree=st.dictionaries(st.sampled_from(KEY_PARTS), _values, max_size=5))
def test_random_structured_files_give_a_config_or_a_config_error(folder, tree):
    _load_file(folder, (PARTS_YAML + yaml.safe_dump(tree)).encode())


_dotted = st.lists(st.sampled_from(KEY_PARTS), min_size=1, max_size=4).map(".".join)
_override = st.one_of(
    st.tuples(_dotted, st.sampled_from(VALUE_TEXTS)).map("=".join),
    st.text(alphabet="abt.=[]{}:_ 1", max_size=20),
)


@SETTINGS
@given(overrides=st.lists(_override, max_size=4))
def test_random_overrides_give_a_config_or_a_config_error(folder, overrides):
    cfg = _load_file(folder, PARTS_YAML.encode(), overrides)
    assert cfg is None or isinstance(cfg, DictConfig)


_json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


@SETTINGS
@given(value=_json_like)
@example(value={"": float("inf"), "\x85": None})  # a key holding a YAML line break, beside .inf (found by hypothesis)
def test_sweep_values_survive_the_trip_through_an_override(value):
    parsed, _ = parse_yaml(format_value(value), "value")
    assert parsed == value
