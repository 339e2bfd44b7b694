"""Parts defined outside the package: the ``imports:`` list of an experiment file.

An experiment file may name Python modules to import before it is validated, so that
the parts they register (a supervision strategy, a backbone, a data module) are known
by name, as mmdetection's ``custom_imports`` does::

    _base_: ../../experiments/odise_label_tiny.yaml
    imports: [my_strategy.py]             # a file, relative to this YAML file's folder
    model:
      supervision: {name: my_strategy}

An entry is a ``.py`` file (relative to the folder of the YAML file that declares it;
``~`` and absolute paths work too) or a module name on the Python path
(``my_package.parts``).  The lists of a file and its ``_base_`` files add up (bases first);
an ``imports=[...]`` override adds to them, its paths relative to the working directory.
The resolved list (files as absolute paths) is kept as the config's ``imports`` key, so the
``config.yaml`` of a run directory imports the same modules again.

Installed packages register parts through the entry-point group ``odise_pl.plugins``
instead (:func:`odise_pl.registry.load_plugins`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odise_pl.config.yaml_source import display_path
from odise_pl.errors import ConfigError

IMPORTS_KEY = "imports"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class DeclaredImport:
    """One entry of ``imports:``.

    Attributes:
        target: a module name, or the absolute path of a ``.py`` file.
        where: who declared it, for messages: ``FILE (line N)`` or ``override '...'``.
        folder: the folder relative paths were resolved against (shown in messages).
    """

    target: str
    where: str
    folder: str

    @property
    def is_file(self) -> bool:
        return self.target.endswith(".py")


def is_path(entry: str) -> bool:
    """True for an entry naming a file (``x.py``, ``dir/x``) rather than a module."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def declared_imports(value: Any, *, where: str, folder: Path) -> list[DeclaredImport]:
    """The entries of one ``imports`` value (a string or a list of strings), paths resolved.

    Args:
        value: what the YAML file or override gave.
        where: the file (and line) or override, for messages.
        folder: the folder relative paths are relative to.

    Raises:
        ConfigError: the value is not a list of non-empty strings, or an entry is neither
            a ``.py`` path nor a module name.
    """
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) and e.strip() for e in entries):
        raise ConfigError(
            f"{where}: '{IMPORTS_KEY}' must be a list of module names or .py files, got "
            f"{value!r}. Write e.g. 'imports: [my_strategy.py, my_package.parts]'."
        )
    found = []
    for entry in (e.strip() for e in entries):
        if is_path(entry):
            if not entry.endswith(".py"):
                raise ConfigError(
                    f"{where}: '{IMPORTS_KEY}' entry '{entry}' looks like a path but is not a "
                    ".py file; name the file (e.g. my_strategy.py) or a module (my_package.parts)."
                )
            path = Path(os.path.expanduser(entry))
            target = str((path if path.is_absolute() else folder / path).resolve())
        elif _MODULE_NAME.fullmatch(entry):
            target = entry
        else:
            raise ConfigError(
                f"{where}: '{IMPORTS_KEY}' entry '{entry}' is neither a module name (my_package.parts) nor a .py file (my_strategy.py)."
            )
        found.append(DeclaredImport(target, where, display_path(folder) or "."))
    return found


def merged_imports(*lists: list[DeclaredImport]) -> list[DeclaredImport]:
    """The lists one after another, each target once (its first declaration kept)."""
    seen: dict[str, DeclaredImport] = {}
    for entries in lists:
        for entry in entries:
            seen.setdefault(entry.target, entry)
    return list(seen.values())


def import_all(entries: list[DeclaredImport]) -> None:
    """Import every declared module (each once per process; a module already imported is kept).

    Raises:
        ConfigError: naming the entry, the file that declared it and what to do; no traceback.
    """
    for entry in entries:
        if entry.is_file:
            _import_file(entry)
        else:
            _import_module(entry)


def _failure(entry: DeclaredImport, what: str, err: BaseException) -> ConfigError:
    """The ConfigError for code that raised while importing: the exception and where it was raised."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename]
    at = f" (raised at {display_path(Path(ours[-1].filename))}:{ours[-1].lineno})" if ours else ""
    first = str(err).splitlines()[0] if str(err) else ""
    return ConfigError(
        f"{entry.where}: importing {what} failed: {type(err).__name__}: {first}{at}. Fix that module, or remove it from '{IMPORTS_KEY}'."
    )


def _import_module(entry: DeclaredImport) -> None:
    name = entry.target
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and name != err.name and not name.startswith(err.name + "."):
            raise ConfigError(
                f"{entry.where}: the module '{name}' in '{IMPORTS_KEY}' needs '{err.name}', "
                f"which is not installed. Install it (pip install ...)."
            ) from None
        raise ConfigError(
            f"{entry.where}: cannot import the module '{name}' named in '{IMPORTS_KEY}': "
            f"{err}. Install the package that provides it, put its folder on PYTHONPATH, "
            f"or name a .py file instead (relative to {entry.folder})."
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure of user code is reported the same way
        raise _failure(entry, f"the module '{name}'", err) from None


def _import_file(entry: DeclaredImport) -> None:
    path = Path(entry.target)
    shown = display_path(path)
    if not path.is_file():
        raise ConfigError(
            f"{entry.where}: the file '{shown}' named in '{IMPORTS_KEY}' does not exist. Paths in "
            f"'{IMPORTS_KEY}' are relative to the declaring file's folder, {entry.folder}."
        )
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(
            f"{entry.where}: '{shown}' in '{IMPORTS_KEY}' cannot be a module name; rename the "
            "file to letters, digits and underscores (e.g. my_strategy.py)."
        )
    loaded = sys.modules.get(name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        if origin is not None and Path(origin).resolve() == path:
            return
        raise ConfigError(
            f"{entry.where}: '{shown}' in '{IMPORTS_KEY}' would be the module '{name}', but a "
            f"module of that name is already imported (from {origin or 'built-in'}). "
            "Rename the file."
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure of user code is reported the same way
        del sys.modules[name]
        raise _failure(entry, f"'{shown}'", err) from None
    if str(path.parent) not in sys.path:  # so that worker processes find the module by its name
        sys.path.append(str(path.parent))
