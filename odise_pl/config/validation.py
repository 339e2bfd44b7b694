"""Validation of merged experiment data against the typed schema and the registered parts.

The schema (:class:`~odise_pl.config.schema.ExperimentConfig`) fixes every key
except those of the dispatched sections (``data``, ``model.backbone``,
``model.supervision``): their ``name`` picks a registry entry whose ``config``
dataclass lists the remaining keys.  All problems found are reported together.

After the keys and types, the values are checked as a whole (before any model part is
built): every field declared with ``choice(...)`` (:mod:`odise_pl.config.schema`), every
section's ``problems()`` (combinations of keys that cannot work) and :data:`CROSS_SECTION_RULES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import ValueNode

from odise_pl import registry as registry_module
from odise_pl.config.schema import DISPATCHED_SECTIONS, ExperimentConfig, aliases_of, choices_of
from odise_pl.config.sections import instantiate_section
from odise_pl.config.yaml_source import Provenance
from odise_pl.errors import ConfigError
from odise_pl.registry import RegistryError

_ABSENT = object()


def get_path(data: Any, dotted: str) -> Any:
    """The value at ``dotted`` in nested dicts, or ``_ABSENT`` when any step is missing."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


@functools.cache
def default_section_name(path: str) -> str | None:
    """The ``name`` the schema gives a dispatched section by default (None if none)."""
    default = OmegaConf.select(OmegaConf.structured(ExperimentConfig), path)
    return default.get("name") if isinstance(default, DictConfig) else None


def _is_section(node: Any) -> bool:
    """True for schema nodes that are dataclass sections (fixed keys)."""
    return isinstance(node, DictConfig) and dataclasses.is_dataclass(node._metadata.object_type)


def _schema_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a schema node, sections included."""
    keys: list[str] = []
    for key in node.keys():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = node._get_node(key)
        if _is_section(child):
            keys.extend(_schema_keys(child, dotted + "."))
    return keys


def _expected(node: Any) -> str:
    """Human-readable type a schema node accepts."""
    if _is_section(node):
        return "a section (a mapping of keys)"
    if isinstance(node, ListConfig):
        return "a list"
    if isinstance(node, DictConfig):
        return "a mapping"
    if isinstance(node, ValueNode):
        ref = node._metadata.ref_type
        name = getattr(ref, "__name__", str(ref))
        return f"{name} or null" if node._metadata.optional else name
    return "another type"  # pragma: no cover


def _given(value: Any) -> str:
    """Human-readable description of a given value."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"the list {_short(value)}"
    if value is None:
        return "null"
    return f"{_short(value)} ({type(value).__name__})"


def _choices(section: DictConfig, key: str) -> tuple:
    """The allowed values of a schema field (declared with ``schema.choice``), or ()."""
    cls = section._metadata.object_type
    return choices_of(cls, key) if dataclasses.is_dataclass(cls) else ()


def _alias_target(section: DictConfig, key: str, value: Any) -> Any:
    """The choice an old name stands for (``schema.choice(..., aliases=)``), else ``value`` unchanged."""
    cls = section._metadata.object_type
    aliases = aliases_of(cls, key) if dataclasses.is_dataclass(cls) else {}
    return aliases.get(value, value) if isinstance(value, str) else value


def closest_choice(value: Any, choices: tuple) -> str | None:
    """The choice a mistyped ``value`` most likely meant (difflib, then a common prefix), or None."""
    text = str(value)
    close = difflib.get_close_matches(text, [str(c) for c in choices], n=1, cutoff=0.6)
    if close:
        return close[0]
    starting = [str(c) for c in choices if text and (str(c).startswith(text) or text.startswith(str(c)))]
    return starting[0] if len(starting) == 1 else None


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _typed_sections(node: DictConfig, prefix: str = "") -> list[tuple[str, type, DictConfig]]:
    """``(dotted prefix ending in '.', dataclass, node)`` of every schema section below ``node``."""
    found = []
    for key in node.keys():
        child = node._get_node(key)
        if _is_section(child):
            found.append((f"{prefix}{key}.", child._metadata.object_type, child))
            found.extend(_typed_sections(child, f"{prefix}{key}."))
    return found


def _global_batch_rule(cfg: DictConfig) -> list[tuple[str, str]]:
    batch = cfg.data.get("global_batch_size")
    accumulate = cfg.trainer.accumulate_grad_batches
    if batch is not None and accumulate != 1:
        return [
            (
                "trainer.accumulate_grad_batches",
                f"{accumulate} contradicts data.global_batch_size={batch}, "
                "which derives the gradient accumulation. Leave trainer.accumulate_grad_batches at 1, "
                "or set data.global_batch_size: null.",
            )
        ]
    return []


#: rules over several sections: ``f(cfg) -> [(dotted key, message), ...]``
CROSS_SECTION_RULES: list[Callable[[DictConfig], list[tuple[str, str]]]] = [_global_batch_rule]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Validator:
    """Collects the problems of one configuration; see :func:`validate`."""

    def __init__(self, provenance: Provenance, source: str = "config") -> None:
        self.provenance = provenance
        self.source = source
        self.problems: list[str] = []
        self._all_keys = _schema_keys(OmegaConf.structured(ExperimentConfig))

    # -- messages ------------------------------------------------------------------------
    def _problem(self, key: str, head: str, tail: str = "") -> None:
        """Record ``FILE: head (line N)tail`` for the origin of ``key``."""
        found = self.provenance.origin(key)
        where, line = (found.where, found.suffix()) if found else (self.source, " (schema default)")
        self.problems.append(f"{where}: {head}{line}{tail}")

    def _suggest(self, dotted: str, siblings: list[str]) -> str:
        """`` Did you mean 'x'?`` for an unknown key, or a list of the valid keys."""
        parent, _, last = dotted.rpartition(".")
        close = difflib.get_close_matches(last, siblings, n=1, cutoff=0.6)
        if close:
            return f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?"
        elsewhere = [k for k in self._all_keys if k.rpartition(".")[2] == last]
        others = [k for k in self._all_keys if not dotted.startswith(k + ".")]  # not its own sections
        close = elsewhere or difflib.get_close_matches(dotted, others, n=1, cutoff=0.75)
        if close:
            return f" Did you mean '{close[0]}'?"
        if siblings:
            return f" Valid keys here: {', '.join(siblings)}."
        return " This section takes no keys."

    def unknown(self, dotted: str, siblings: list[str], context: str = "") -> None:
        self._problem(dotted, f"unknown key '{dotted}'", f"{context}." + self._suggest(dotted, siblings))

    def not_a_choice(self, dotted: str, value: Any, choices: tuple) -> None:
        close = closest_choice(value, choices)
        hint = f" Did you mean '{close}'?" if close is not None else ""
        self._problem(dotted, f"'{dotted}' must be one of {', '.join(map(str, choices))}", f", got {_given(value)}.{hint}")

    # -- the walk ------------------------------------------------------------------------
    def section(self, target: DictConfig, data: dict, prefix: str, skip: tuple = (), extra: tuple = ()) -> None:
        """Write ``data`` into the schema node ``target`` key by key, recording problems.

        Args:
            target: a structured (dataclass) DictConfig; modified in place.
            data: the user's mapping for that section.
            prefix: dotted key of the section ("" for the top level, else ending in ".").
            skip: dotted keys handled elsewhere (the dispatched sections).
            extra: further valid key names of this section, for suggestions only.
        """
        siblings = [*extra, *(str(k) for k in target.keys())]
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if dotted in skip:
                continue
            if not isinstance(key, str) or key not in target:
                self.unknown(dotted, siblings)
                continue
            node = target._get_node(key)
            if _is_section(node) and isinstance(value, dict):
                self.section(node, value, dotted + ".", skip)  # nested sections take no extras
                continue
            value = _alias_target(target, key, value)
            try:
                OmegaConf.update(target, key, value, merge=False)
            except OmegaConfBaseException:
                self._problem(dotted, f"wrong type for '{dotted}'", f": expected {_expected(node)}, got {_given(value)}.")
                continue
            choices = _choices(target, key)
            if choices and not _is_interpolation(value) and target[key] not in choices:
                self.not_a_choice(dotted, value, choices)

    def dispatched(self, data: dict, path: str, registry_attr: str) -> Any:
        """Validate the dispatched section at ``path``; return its full mapping, or None."""
        value = get_path(data, path)
        parent = get_path(data, path.rpartition(".")[0]) if "." in path else data
        if parent is not _ABSENT and not isinstance(parent, dict):
            return None  # the enclosing section is wrong; already reported
        default_name = default_section_name(path)
        if value is _ABSENT:
            value = {"name": default_name} if default_name else {}
        if not isinstance(value, dict):
            self._problem(
                path,
                f"'{path}'",
                f" must be a section with a 'name', got {_given(value)}. Write e.g. '{path.rpartition('.')[2]}: {{name: ...}}'.",
            )
            return None
        registry = getattr(registry_module, registry_attr)
        name = value.get("name", default_name)
        if not isinstance(name, str):
            self._problem(
                f"{path}.name",
                f"'{path}.name'",
                f" must be the name of a registered {registry.kind}, got {_given(name)}. Available: {', '.join(registry.names())}.",
            )
            return None
        try:
            entry = registry.get(name)
        except RegistryError:
            close = difflib.get_close_matches(name, registry.names(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            self._problem(
                f"{path}.name",
                f"unknown {registry.kind} '{name}' for '{path}.name'",
                f".{hint} Available: {', '.join(registry.names()) or 'none'}.",
            )
            return None
        options = {k: v for k, v in value.items() if k != "name"}
        if entry.config is None:
            for key in options:
                self.unknown(f"{path}.{key}", [], f": the {registry.kind} '{name}' takes no options besides 'name'")
            return {"name": name}
        target = OmegaConf.structured(entry.config)
        self.section(target, options, path + ".", extra=("name",))
        return {"name": name, **OmegaConf.to_container(target, resolve=False)}

    def check_values(self, cfg: DictConfig, parts: dict[str, type | None]) -> None:
        """Choices, each section's ``problems()`` and the cross-section rules of a resolved config.

        Args:
            cfg: the validated, resolved config.
            parts: dotted path of each dispatched section -> its registered config dataclass (or None).
        """
        sections = _typed_sections(cfg)
        sections += [(f"{path}.", cls, OmegaConf.select(cfg, path)) for path, cls in parts.items() if cls]
        for prefix, cls, node in sections:
            for field in dataclasses.fields(cls):
                choices = field.metadata.get("choices")
                value = node.get(field.name) if choices else None
                if choices and value is not None and value not in choices:
                    self.not_a_choice(prefix + field.name, value, tuple(choices))
            check = getattr(cls, "problems", None)
            if callable(check):
                for key, message in check(instantiate_section(node, cls)):
                    self._problem(prefix + key, f"'{prefix + key}'", f": {message}")
        for rule in CROSS_SECTION_RULES:
            for key, message in rule(cfg):
                self._problem(key, f"'{key}'", f": {message}")

    def check_missing(self, cfg: DictConfig) -> None:
        for key in sorted(OmegaConf.missing_keys(cfg)):
            self._problem(key, f"no value for '{key}'", f" (it is '???'). Set it in the file or on the command line: {key}=VALUE.")

    def resolve(self, cfg: DictConfig) -> None:
        try:
            OmegaConf.resolve(cfg)
        except OmegaConfBaseException as err:
            key = str(getattr(err, "full_key", "") or "")
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            self._problem(key, f"cannot resolve the interpolation of '{key}'", f": {first}")

    def raise_if_any(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError(self.problems[0])
        if self.problems:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            raise ConfigError(f"{len(self.problems)} problems in the configuration:\n{listed}")


def validate(data: dict, provenance: Provenance, source: str = "config") -> DictConfig:
    """Turn merged experiment data into a validated, defaults-filled, resolved config.

    Args:
        data: the merged mapping of the experiment file(s) and overrides.
        provenance: origin of each dotted key, for error messages.
        source: the experiment file, named for problems with keys nobody set.

    Returns:
        A structured ``DictConfig`` of :class:`ExperimentConfig` (not yet read-only).

    Raises:
        ConfigError: listing every unknown key, wrong type, unknown part name,
            missing value or broken interpolation; then every value outside its choices
            and every combination a section's ``problems()`` or a cross-section rule refuses.
    """
    checker = Validator(provenance, source)
    cfg = OmegaConf.structured(ExperimentConfig)
    checker.section(cfg, data, "", skip=tuple(DISPATCHED_SECTIONS))
    sections = {path: checker.dispatched(data, path, attr) for path, attr in DISPATCHED_SECTIONS.items()}
    parts = {path: part_config_class(attr, section) for (path, attr), section in zip(DISPATCHED_SECTIONS.items(), sections.values())}
    checker.raise_if_any()
    for path, section in sections.items():
        if section is not None:
            OmegaConf.update(cfg, path, section, merge=False)
    checker.resolve(cfg)
    checker.raise_if_any()
    checker.check_missing(cfg)
    checker.raise_if_any()
    checker.check_values(cfg, parts)
    checker.raise_if_any()
    return cfg


def part_config_class(registry_attr: str, section: dict | None) -> type | None:
    """The config dataclass registered for a validated dispatched section (None if none)."""
    if section is None:
        return None
    return getattr(registry_module, registry_attr).get(section["name"]).config
