"""Fixtures for the config tests: throw-away registered parts and YAML files in tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from odise_pl import registry

# Every test experiment starts from these sections, so no built-in part is needed.
PARTS_YAML = """\
data: {name: test_dummy_data}
model:
  backbone: {name: test_dummy_backbone}
  supervision: {name: test_dummy_supervision}
"""


@dataclass
class DummyBackboneConfig:
    t: int = 0
    width: int = 8
    levels: list = field(default_factory=lambda: ["s2", "s3"])


@dataclass
class OtherBackboneConfig:
    depth: int = 2


@dataclass
class DummyDataConfig:
    root: str = "datasets/dummy"
    batch_size: int = 2
    image_size: int | None = None


class _Part:
    """Stands in for a registered class."""


_DUMMIES = [
    (registry.BACKBONES, "test_dummy_backbone", DummyBackboneConfig),
    (registry.BACKBONES, "test_dummy_backbone_b", OtherBackboneConfig),
    (registry.SUPERVISIONS, "test_dummy_supervision", None),
    (registry.DATA_MODULES, "test_dummy_data", DummyDataConfig),
]


@pytest.fixture(scope="module", autouse=True)
def dummy_parts():
    """Only throw-away parts on the registries, whether or not the built-in ones were imported before.

    Each registry gets a fresh table for the module (restored afterwards), so these tests
    do not depend on which other test modules ran first in the session.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_imported", True)
        for reg in {id(r): r for r, _, _ in _DUMMIES}.values():
            patch.setattr(reg, "_entries", {})
        for reg, name, config in _DUMMIES:
            reg.register(name, config=config)(type(name, (_Part,), {}))
        yield


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write("a.yaml", text, parts=True)``: a file under tmp_path (parts header prepended)."""

    def _write(name: str, text: str = "", parts: bool = False) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(text)
        path.write_text((PARTS_YAML if parts else "") + body, encoding="utf-8")
        return path

    return _write
