"""Errors speak to the user: file, line, full dotted key and a suggestion."""

from __future__ import annotations

import pytest

from odise_pl.config import load_config
from odise_pl.errors import ConfigError


def _error(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return str(err.value)


def test_unknown_key_names_file_line_and_suggestion(write):
    path = write(
        "x.yaml",
        """\
        data: {name: test_dummy_data}
        model:
          backbone: {name: test_dummy_backbone}
          supervision: {name: test_dummy_supervision}
          mask_generator:
            hidden_dim: 128
            num_querys: 12
        """,
    )
    message = _error(path)
    assert message.endswith(
        "x.yaml: unknown key 'model.mask_generator.num_querys' (line 7). Did you mean 'model.mask_generator.num_queries'?"
    )


def test_unknown_key_in_a_base_names_the_base(write):
    write("base.yaml", "seed: 1\ntrainr:\n  max_steps: 3\n", parts=True)
    message = _error(write("x.yaml", "_base_: base.yaml\n"))
    assert "base.yaml: unknown key 'trainr' (line 6). Did you mean 'trainer'?" in message
    assert "x.yaml" not in message


def test_misplaced_key_suggests_where_it_lives(write):
    assert "Did you mean 'optim.lr'?" in _error(write("x.yaml", "trainer: {lr: 0.1}\n", parts=True))


def test_unknown_key_without_close_match_lists_the_valid_ones(write):
    message = _error(write("x.yaml", "run: {zzzzzz: 1}\n", parts=True))
    assert "Valid keys here: root, name, version." in message


def test_wrong_type_names_key_file_type_and_value(write):
    message = _error(write("x.yaml", "trainer:\n  max_steps: lots\n", parts=True))
    assert message.endswith("x.yaml: wrong type for 'trainer.max_steps' (line 6): expected int, got 'lots' (str).")
    assert "expected a section" in _error(write("y.yaml", "optim: 3\n", parts=True))
    assert "expected a list, got 'x' (str)" in _error(write("z.yaml", "optim: {betas: x}\n", parts=True))
    assert "expected str or null, got a mapping" in _error(write("w.yaml", "run: {version: {a: 1}}\n", parts=True))


def test_all_problems_are_reported_together(write):
    message = _error(write("x.yaml", "seed: x\ntrainr: 1\noptim: {lrr: 1}\n", parts=True))
    assert message.startswith("3 problems in the configuration:")
    assert "'seed'" in message and "'trainr'" in message and "'optim.lrr'" in message


def test_unknown_registry_name(write):
    path = write(
        "x.yaml",
        """\
        data: {name: test_dummy_data}
        model:
          backbone: {name: test_dummy_backbon}
          supervision: {name: test_dummy_supervision}
        """,
    )
    message = _error(path)
    assert "x.yaml: unknown backbone 'test_dummy_backbon' for 'model.backbone.name' (line 3)." in message
    assert "Did you mean 'test_dummy_backbone'?" in message and "Available:" in message


def test_unknown_registry_name_from_an_override(write):
    message = _error(write("x.yaml", "", parts=True), ["data.name=test_dummy_dat"])
    assert message.startswith("override 'data.name=test_dummy_dat': unknown data module 'test_dummy_dat'")


def test_dispatched_options_are_validated_against_the_part(write):
    message = _error(write("x.yaml", "", parts=True), ["model.backbone.widht=3", "data.batch_size=big"])
    assert "unknown key 'model.backbone.widht'. Did you mean 'model.backbone.width'?" in message
    assert "wrong type for 'data.batch_size': expected int, got 'big' (str)." in message
    assert "takes no options" in _error(write("y.yaml", "", parts=True), ["model.supervision.foo=1"])


def test_dispatched_section_shape(write):
    path = write("x.yaml", "data: {name: test_dummy_data}\nmodel: {backbone: clip, supervision: {name: test_dummy_supervision}}\n")
    assert "'model.backbone' (line 2) must be a section with a 'name'" in _error(path)
    path = write("y.yaml", "", parts=True)
    assert "must be the name of a registered backbone, got the list [1]" in _error(path, ["model.backbone.name=[1]"])


def test_missing_value_and_broken_interpolation(write):
    assert "no value for 'trainer.max_steps' (line 6)" in _error(write("x.yaml", "trainer:\n  max_steps: ???\n", parts=True))
    message = _error(write("y.yaml", "optim: {warmup_steps: '${trainer.nope}'}\n", parts=True))
    assert "y.yaml: cannot resolve the interpolation of 'optim.warmup_steps' (line 5)" in message


@pytest.mark.parametrize(
    "text, match",
    [
        ("seed: 1\ntrainer:\n  max_steps: [1,\n", r"malformed YAML at line \d+, column \d+"),
        ("seed: 1\n  bad indent: 2\n", r"malformed YAML at line 2, column \d+: mapping values are not allowed"),
        ("seed: 1\nseed: 2\n", r"duplicate key 'seed' at line 2"),
        ("- a\n- b\n", r"top level must be a mapping .*got a list"),
        ("just text\n", r"top level must be a mapping .*got a str"),
        ("seed: !!python/object:os.system {}\n", r"malformed YAML"),
    ],
)
def test_malformed_files(write, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write("x.yaml", text))


def test_binary_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(path)


def test_empty_file_is_an_empty_mapping(write):
    # An empty file uses every default, which names the built-in parts; with only the test
    # parts registered, that is an unknown-name error (not a crash).
    with pytest.raises(ConfigError, match="schema default"):
        load_config(write("x.yaml", "# nothing\n"))


def test_sections_left_out_get_the_default_part(write):
    message = _error(write("x.yaml", "data: {name: test_dummy_data}\n"))
    assert "x.yaml: unknown backbone 'clip' for 'model.backbone.name' (schema default)." in message
    assert "unknown supervision strategy 'category_label'" in message
