"""Small registries for the pluggable parts, keyed by the names the YAML files use.

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
from dataclasses import dataclass
from typing import Any, Callable


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
                raise ValueError(f"{self.kind} '{name}' is registered twice "
                                 f"({self._entries[name].cls!r} and {obj!r})")
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


def _import_builtin_parts() -> None:
    """Import the packages whose modules register the built-in parts (once)."""
    global _imported
    if _imported:
        return
    _imported = True
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
