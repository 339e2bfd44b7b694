"""Loading experiment files: ``_base_`` inheritance, ``key=value`` overrides, validation.

An experiment file is YAML.  Its optional top-level ``_base_`` names one file or
a list of files (relative to the including file) that it builds on: bases are
loaded recursively, later bases override earlier ones, and the including file
overrides all its bases.  Mappings merge key by key; any other value (a list,
a number) replaces.  Changing the ``name`` of a dispatched section (``data``,
``model.backbone``, ``model.supervision``) starts that section afresh, so
that options of the previous part do not leak into the new one.

Command-line overrides follow OmegaConf's dotlist form ``dotted.key=value``
with the value parsed as YAML (``trainer.max_steps=100``,
``optim.milestones=[0.5,0.9]``, ``model.backbone={name: clip}``).  They apply
in order after all files; those that change a dispatched section's ``name``
apply first, so ``model.backbone.t=0 model.backbone.name=diffusion`` keeps
``t``.

Before validation, the installed plugins (entry-point group ``odise_pl.plugins``) are
loaded and the modules of the files' ``imports:`` lists imported
(:mod:`odise_pl.config.imports`), so that the parts they register are known by name.

Example:
    >>> cfg = load_config("experiments/odise_label_coco.yaml", ["trainer.max_steps=100"])
    >>> cfg.trainer.max_steps
    100
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

from omegaconf import DictConfig, OmegaConf

from odise_pl import registry
from odise_pl.config.imports import IMPORTS_KEY, DeclaredImport, declared_imports, import_all, merged_imports
from odise_pl.config.schema import DISPATCHED_SECTIONS
from odise_pl.config.sections import instantiate_section
from odise_pl.config.validation import default_section_name, validate
from odise_pl.config.yaml_source import (
    Origin,
    Provenance,
    deep_merge,
    display_path,
    parse_yaml,
    read_yaml,
)
from odise_pl.errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

BASE_KEY = "_base_"


# -- files and inheritance ------------------------------------------------------------------
def _replace_on_new_name(dotted: str, old: dict, new: dict) -> bool:
    """Merge rule: a dispatched section whose ``name`` changes is replaced, not merged."""
    if dotted not in DISPATCHED_SECTIONS or "name" not in new:
        return False
    return new["name"] != old.get("name", default_section_name(dotted))


def _base_paths(data: dict, path: Path, lines: dict[str, int]) -> list[Path]:
    """The files named by ``_base_`` in ``data`` (removed from it), resolved against ``path``."""
    shown = display_path(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return []
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        line = f" (line {lines[BASE_KEY]})" if BASE_KEY in lines else ""
        raise ConfigError(f"{shown}: '{BASE_KEY}'{line} must be a file name or a list of file names, got {bases!r}.")
    resolved = []
    for name in names:
        base = Path(os.path.expanduser(name))
        base = base if base.is_absolute() else path.parent / base
        if not base.is_file():
            line = f" (line {lines[BASE_KEY]})" if BASE_KEY in lines else ""
            raise ConfigError(
                f"{shown}: base file '{name}'{line} not found (looked for "
                f"{display_path(base)}). Paths in '{BASE_KEY}' are relative to "
                f"the including file's folder, {display_path(path.parent) or '.'}."
            )
        resolved.append(base)
    return resolved


def _own_imports(data: dict, path: Path, lines: dict[str, int]) -> list[DeclaredImport]:
    """The ``imports`` entries of one file (removed from ``data``), paths resolved against its folder."""
    if IMPORTS_KEY not in data:
        return []
    line = f" (line {lines[IMPORTS_KEY]})" if IMPORTS_KEY in lines else ""
    return declared_imports(data.pop(IMPORTS_KEY), where=f"{display_path(path)}{line}", folder=path.parent)


def _load_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict, Provenance, list[DeclaredImport]]:
    """Load ``path`` and its bases, recursively; ``chain`` holds the files including it.

    Returns:
        The merged data (without ``imports``), the origin of every key, and the ``imports``
        entries of the bases and the file, in that order.
    """
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(display_path(p) for p in (*chain[chain.index(real) :], real))
        raise ConfigError(f"circular '{BASE_KEY}' chain: {cycle}. Remove one of these inclusions.")
    shown = display_path(path)
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: the top level must be a mapping of keys (e.g. 'trainer: ...'), got a {type(data).__name__}.")
    merged: dict = {}
    provenance = Provenance()
    imports: list[DeclaredImport] = []
    own = _own_imports(data, path, lines)
    for base in _base_paths(data, path, lines):
        base_data, base_prov, base_imports = _load_tree(base, (*chain, real))
        merged = deep_merge(merged, base_data, replace_when=_replace_on_new_name)
        provenance.update(base_prov)
        imports = merged_imports(imports, base_imports)
    merged = deep_merge(merged, data, replace_when=_replace_on_new_name)
    provenance.update({key: Origin(shown, line) for key, line in lines.items() if key != BASE_KEY and key.partition(".")[0] != IMPORTS_KEY})
    return merged, provenance, merged_imports(imports, own)


# -- overrides ----------------------------------------------------------------------------
def _parse_override(text: Any) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], parsed value)."""
    where = f"override {text!r}"
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"{where} is not of the form key=value; write e.g. trainer.max_steps=100.")
    key, _, raw = text.partition("=")
    key = key.strip()
    if key[:1] in ("+", "~"):
        raise ConfigError(f"{where}: Hydra-style '{key[0]}' prefixes are not supported; write dotted.key=value.")
    parts = key.split(".")
    if not key or any(not p.strip() for p in parts):
        raise ConfigError(f"{where}: '{key}' is not a dotted key; write e.g. model.inference.classifier=clip.")
    if any(c in key for c in "[]"):
        raise ConfigError(f"{where}: list items cannot be set one by one; set the whole list, e.g. optim.milestones=[0.5,0.9].")
    value, _ = parse_yaml(raw, where, is_value=True)
    return [p.strip() for p in parts], value


def _sets_section_name(parts: list[str]) -> bool:
    dotted = ".".join(parts)
    return dotted in DISPATCHED_SECTIONS or (dotted.endswith(".name") and dotted[:-5] in DISPATCHED_SECTIONS)


def _apply_override(data: dict, provenance: Provenance, text: str) -> dict:
    """Apply one ``key=value`` override to ``data``; returns the new data."""
    parts, value = _parse_override(text)
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"override {text!r}: '{prefix}' is {repr(node)[:60]}, not a section, so "
                f"'{'.'.join(parts)}' cannot be set. Set '{prefix}' itself."
            )
    dotted = ".".join(parts)
    merged = deep_merge(data, nested, replace_when=_replace_on_new_name)
    provenance.set_subtree(dotted, value, Origin(f"override {text!r}"))
    return merged


def _is_imports_override(text: Any) -> bool:
    return isinstance(text, str) and text.partition("=")[0].strip() == IMPORTS_KEY


def _ordered(overrides: Iterable[str]) -> list[str]:
    """Overrides with those that pick a dispatched section's part first (stable)."""
    items = list(overrides)

    def picks_part(text: Any) -> bool:
        try:
            return _sets_section_name(_parse_override(text)[0])
        except ConfigError:
            return False

    return sorted(items, key=lambda t: 0 if picks_part(t) else 1)


# -- public API ----------------------------------------------------------------------------
def load_config(path: PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Load an experiment file with its ``_base_`` files and overrides, and validate it.

    Args:
        path: the experiment YAML file.
        overrides: ``dotted.key=value`` strings, applied after the files.

    Returns:
        A read-only, structured ``DictConfig`` of
        :class:`~odise_pl.config.schema.ExperimentConfig`, defaults filled in
        (also in the dispatched sections, from their registered dataclasses) and
        interpolations resolved.

    Raises:
        ConfigError: naming the file (and line) or override at fault, and what to do.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    data, provenance, imports = _load_tree(Path(path), ())
    for text in _ordered(overrides):
        if _is_imports_override(text):
            value = _parse_override(text)[1]
            imports = merged_imports(imports, declared_imports(value, where=f"override {text!r}", folder=Path.cwd()))
            continue
        data = _apply_override(data, provenance, text)
    registry.load_plugins()
    import_all(imports)
    if imports:
        data[IMPORTS_KEY] = [entry.target for entry in imports]
        provenance[IMPORTS_KEY] = Origin(imports[0].where)
    cfg = validate(data, provenance, display_path(Path(path)))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The resolved configuration as YAML text."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def print_config(path: PathLike, overrides: Sequence[str] = ()) -> str:
    """The resolved YAML of an experiment file and overrides (``odise-pl config``)."""
    return to_yaml(load_config(path, overrides))


def save_resolved(cfg: DictConfig, path: PathLike) -> Path:
    """Write the resolved configuration as YAML, atomically (:func:`odise_pl.atomic_files.atomic_write`).

    Args:
        cfg: a configuration from :func:`load_config`.
        path: the file to write; its folder is created when missing.

    Returns:
        The path written.
    """
    from odise_pl.atomic_files import atomic_write

    return atomic_write(path, to_yaml(cfg))


def part_config(cfg: DictConfig, section: str) -> tuple[Any, Any]:
    """The registry entry and typed options of a dispatched section.

    Args:
        cfg: a configuration from :func:`load_config`.
        section: a key of ``DISPATCHED_SECTIONS``, e.g. ``"model.backbone"``.

    Returns:
        ``(entry, options)``: the :class:`~odise_pl.registry.Entry` and an
        instance of its ``config`` dataclass (None when it has none).
    """
    node = OmegaConf.select(cfg, section)
    entry = getattr(registry, DISPATCHED_SECTIONS[section]).get(node.name)
    options = instantiate_section(node, entry.config) if entry.config is not None else None
    return entry, options
