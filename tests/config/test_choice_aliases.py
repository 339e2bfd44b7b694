"""Method-neutral choice names: an old name is accepted and stored as the new one (issue #23, item 1)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from odise_pl.config import load_config
from odise_pl.config.schema import aliases_of, choice
from odise_pl.errors import ConfigError

PARTS = ["data={name: test_dummy_data}", "model.backbone={name: test_dummy_backbone}", "model.supervision={name: test_dummy_supervision}"]


@pytest.mark.parametrize("given, stored", [("diffusion", "in_vocab"), ("in_vocab", "in_vocab"), ("clip", "clip"), ("ensemble", "ensemble")])
def test_classifier_accepts_the_old_name_and_prints_the_new_one(write, given, stored):
    path = write("exp.yaml", f"model:\n  inference:\n    classifier: {given}\n")
    cfg = load_config(path, PARTS)
    assert cfg.model.inference.classifier == stored


def test_the_old_name_works_as_a_command_line_override_and_a_wrong_name_still_fails(write):
    path = write("exp.yaml", "", parts=True)
    assert load_config(path, ["model.inference.classifier=diffusion"]).model.inference.classifier == "in_vocab"
    with pytest.raises(ConfigError, match="must be one of in_vocab, clip, ensemble"):
        load_config(path, ["model.inference.classifier=difusion"])


def test_aliases_must_point_at_choices():
    assert aliases_of(type("NoFields", (), {"__dataclass_fields__": {}}), "x") == {}
    with pytest.raises(ValueError, match="must point at choices"):

        @dataclass
        class Bad:
            mode: str = choice("a", ("a", "b"), aliases={"old": "c"})
