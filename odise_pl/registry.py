"""Small registries for the pluggable parts, keyed by the names the YAML files use.

A part registers itself when its module is imported: the built-in ones on first use of
a registry; others through an experiment's ``imports:`` list (:mod:`odise_pl.config.imports`)
or, for installed packages, the entry-point group ``odise_pl.plugins`` (:func:`load_plugins`),
both before a config is validated.

A new part registers under a name and its YAML ``name:`` picks it (a registry of its own here, so
the example adds nothing to the built-in ``BACKBONES``):

Example:
    >>> from dataclasses import dataclass
    >>> PARTS = Registry("backbone")
    >>> @dataclass
    ... class MyBackboneConfig:
    ...     width: int = 64
    >>> @PARTS.register("my_backbone", config=MyBackboneConfig)
    ... class MyBackbone:
    ...     pass
    >>> PARTS.get("my_backbone").cls is MyBackbone, PARTS.get("my_backbone").config().width
    (True, 64)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from odise_pl.errors import ConfigError


class RegistryError(KeyError):
    """An unknown name was asked of a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as prose
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    cls: Any
    config: type | None  # a dataclass whose fields are the YAML keys of this part (besides `name`)


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, config: type | None = None) -> Callable[[Any], Any]:
        def wrap(obj: Any) -> Any:
            if name in self._entries and self._entries[name].cls is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({self._entries[name].cls!r} and {obj!r})")
            self._entries[name] = Entry(name, obj, config)
            return obj

        return wrap

    def get(self, name: str) -> Entry:
        _import_builtin_parts()
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(f"unknown {self.kind} '{name}'.{hint} Available: {', '.join(self.names())}.")
        return self._entries[name]

    def names(self) -> list[str]:
        _import_builtin_parts()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _import_builtin_parts()
        return name in self._entries


BACKBONES = Registry("backbone")
SUPERVISIONS = Registry("supervision strategy")
DATA_MODULES = Registry("data module")

_BUILTIN_MODULES = (
    "odise_pl.models.backbones",
    "odise_pl.models.supervision",
    "odise_pl.data_modules",
)
_imported = False

#: entry-point group of installed packages that register parts, e.g. in their pyproject.toml:
#: ``[project.entry-points."odise_pl.plugins"] my_parts = "my_package.parts"``
PLUGIN_GROUP = "odise_pl.plugins"
_plugins_loaded: list[str] | None = None


def _import_builtin_parts() -> None:
    """Import the packages whose modules register the built-in parts (once), then the plugins."""
    global _imported
    if _imported:
        return
    _imported = True
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    load_plugins()


def load_plugins() -> list[str]:
    """Load every entry point of the group ``odise_pl.plugins`` (once per process).

    An entry point names a module (``my_package.parts``: importing it registers its parts) or
    a function in one (``my_package.parts:register``: called with no arguments).

    Returns:
        ``"DISTRIBUTION:ENTRY_POINT"`` of each plugin loaded.

    Raises:
        ConfigError: a plugin cannot be loaded; names its distribution and entry point.
    """
    global _plugins_loaded
    if _plugins_loaded is not None:
        return list(_plugins_loaded)
    from importlib.metadata import entry_points

    loaded = []
    for point in sorted(entry_points(group=PLUGIN_GROUP), key=lambda p: p.name):
        dist = getattr(getattr(point, "dist", None), "name", None) or "an unknown distribution"
        try:
            target = point.load()
            if inspect.isfunction(target):
                target()
        except Exception as err:  # noqa: BLE001 - any failure of a plugin is reported the same way
            first = str(err).splitlines()[0] if str(err) else ""
            raise ConfigError(
                f"the installed plugin '{point.name} = {point.value}' (entry point group "
                f"'{PLUGIN_GROUP}' of the distribution '{dist}') cannot be loaded: "
                f"{type(err).__name__}: {first}. Fix or reinstall that package, or uninstall it "
                f"(pip uninstall {dist})."
            ) from None
        loaded.append(f"{dist}:{point.name}")
    _plugins_loaded = loaded
    return list(loaded)
