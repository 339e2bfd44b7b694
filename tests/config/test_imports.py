"""Parts from outside the package: ``imports:`` and the ``odise_pl.plugins`` entry points (issue #15, item 7).

Every test writes modules with a unique name, so that a module imported by one test (and
kept in ``sys.modules``) never stands in for another test's.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from odise_pl import registry
from odise_pl.config import load_config
from odise_pl.errors import ConfigError

PARTS = "data: {name: test_dummy_data}\nmodel:\n  backbone: {name: test_dummy_backbone}\n"


def _strategy_module(folder: Path, *, body: str = "") -> tuple[Path, str]:
    """A .py file registering a supervision strategy with one option; returns (file, strategy name)."""
    stem = f"parts_{uuid.uuid4().hex[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(
        textwrap.dedent(f"""\
        from dataclasses import dataclass
        from odise_pl.registry import SUPERVISIONS
        {body}

        @dataclass
        class Options:
            weight: float = 1.0

        @SUPERVISIONS.register("{stem}", config=Options)
        class Strategy:
            pass
        """)
    )
    return path, stem


@pytest.fixture(autouse=True)
def clean_modules():
    """Forget the modules a test imported (their names are unique anyway)."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("parts_", "plugin_")):
            del sys.modules[name]


def test_a_file_named_relative_to_the_yaml_registers_its_part_before_validation(write, tmp_path):
    module, name = _strategy_module(tmp_path / "exp" / "lib")
    path = write("exp/run.yaml", f"imports: [lib/{module.name}]\n{PARTS}  supervision: {{name: {name}, weight: 0.5}}\n")
    cfg = load_config(path)
    assert cfg.model.supervision.name == name and cfg.model.supervision.weight == 0.5
    assert list(cfg.imports) == [str(module.resolve())]  # kept, absolute: a run's config.yaml imports it again
    with pytest.raises(ConfigError, match=r"'model.supervision.wieght'.*Did you mean 'model.supervision.weight'"):
        load_config(path, ["model.supervision.wieght=1"])  # the external part's keys are checked too


def test_imports_add_up_through_bases_each_relative_to_its_own_file(write, tmp_path, monkeypatch):
    base_module, base_name = _strategy_module(tmp_path / "base_dir")
    child_module, child_name = _strategy_module(tmp_path / "child_dir")
    cwd_module, cwd_name = _strategy_module(tmp_path / "cwd")
    write("base_dir/base.yaml", f"imports: {base_module.name}\n{PARTS}  supervision: {{name: {base_name}}}\n")
    child = write("child_dir/child.yaml", f"_base_: ../base_dir/base.yaml\nimports: [{child_module.name}]\n")
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = load_config(child, [f"model.supervision.name={child_name}", f"imports=[{cwd_module.name}]"])
    assert cfg.model.supervision.name == child_name
    assert list(cfg.imports) == [str(p.resolve()) for p in (base_module, child_module, cwd_module)]
    assert cwd_name in registry.SUPERVISIONS and base_name in registry.SUPERVISIONS


def test_a_module_name_is_imported_from_the_python_path(write, tmp_path, monkeypatch):
    _, name = _strategy_module(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = write("exp.yaml", f"imports: [{name}]\n{PARTS}  supervision: {{name: {name}}}\n")
    assert load_config(path).imports == [name]


@pytest.mark.parametrize(
    "entry, expected",
    [
        (
            "missing_file.py",
            r"exp.yaml \(line 1\): the file '.*missing_file.py' named in 'imports' does not exist. "
            r"Paths in 'imports' are relative to the declaring file's folder",
        ),
        (
            "no_such_module_xyz",
            r"exp.yaml \(line 1\): cannot import the module 'no_such_module_xyz' named in "
            r"'imports'.*Install the package",
        ),
        ("not/a/module", r"looks like a path but is not a .py file"),
        ("3bad-name", r"neither a module name .* nor a .py file"),
    ],
)
def test_an_entry_that_cannot_be_imported_names_it_the_file_and_what_to_do(write, entry, expected):
    path = write("exp.yaml", f"imports: ['{entry}']\n{PARTS}  supervision: {{name: test_dummy_supervision}}\n")
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_a_module_that_fails_names_the_exception_and_its_line_without_a_traceback(write, tmp_path):
    module, name = _strategy_module(tmp_path, body="raise RuntimeError('half-written strategy')")
    path = write("exp.yaml", f"imports: [{module.name}]\n{PARTS}  supervision: {{name: {name}}}\n")
    with pytest.raises(
        ConfigError,
        match=rf"exp.yaml \(line 1\): importing '.*{module.name}' failed: RuntimeError: "
        rf"half-written strategy \(raised at .*{module.name}:3\)",
    ) as err:
        load_config(path)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert name not in sys.modules  # a failed import leaves nothing half-registered in sys.modules
    # (through the command line: tests/commands/test_config_before_weights.py)


def _install_plugin(site: Path, dist: str, value: str, module_text: str, stem: str) -> None:
    """A distribution on ``site`` (a folder on sys.path) with one ``odise_pl.plugins`` entry point."""
    (site / f"{stem}.py").write_text(module_text)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[odise_pl.plugins]\nmy_parts = {value}\n")


def test_installed_plugins_are_loaded_before_validation_and_a_broken_one_is_named(write, tmp_path, monkeypatch):
    stem = f"plugin_{uuid.uuid4().hex[:10]}"
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(
        site,
        f"good-{stem}",
        f"{stem}:register",
        textwrap.dedent(f"""\
        from odise_pl.registry import SUPERVISIONS

        def register():
            SUPERVISIONS.register("{stem}")(type("Strategy", (), {{}}))
        """),
        stem,
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_plugins_loaded", None)
    path = write("exp.yaml", f"{PARTS}  supervision: {{name: {stem}}}\n")
    assert load_config(path).model.supervision.name == stem
    assert f"good-{stem}:my_parts" in registry.load_plugins()

    broken = tmp_path / "broken_site"
    broken.mkdir()
    _install_plugin(broken, f"bad-{stem}", f"{stem}_broken", "import no_such_dependency_xyz\n", f"{stem}_broken")
    monkeypatch.syspath_prepend(str(broken))
    monkeypatch.setattr(registry, "_plugins_loaded", None)
    with pytest.raises(
        ConfigError,
        match=rf"installed plugin 'my_parts = {stem}_broken' \(entry point group "
        rf"'odise_pl.plugins' of the distribution 'bad-{stem}'\) cannot be "
        rf"loaded: ModuleNotFoundError.*pip uninstall bad-{stem}",
    ):
        load_config(path)
