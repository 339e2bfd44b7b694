"""Reading YAML files for the config loader: data, line numbers and where each key came from.

Every key of a loaded configuration remembers its origin (a file and line, or a
command-line override), so that an error can point at the line that set it.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import GrammarParseError

from odise_pl.errors import ConfigError


@dataclass(frozen=True)
class Origin:
    """Where a key of the configuration was set.

    Attributes:
        where: a file as shown to the user, or ``override 'key=value'``.
        line: 1-based line of the key in that file, or None.
    """

    where: str
    line: int | None = None

    def suffix(self) -> str:
        """`` (line N)`` when the line is known, else the empty string."""
        return f" (line {self.line})" if self.line else ""


class Provenance(dict):
    """Dotted key -> :class:`Origin`; looks up the longest known prefix of a key."""

    def origin(self, key: str) -> Origin | None:
        """Origin of ``key``, or of its closest enclosing section that has one."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            found = self.get(".".join(parts[:n]))
            if found is not None:
                return found
        return None

    def set_subtree(self, prefix: str, value: Any, origin: Origin) -> None:
        """Mark ``prefix`` and every mapping key below it in ``value`` as set by ``origin``."""
        self[prefix] = origin
        if isinstance(value, dict):
            for key, sub in value.items():
                self.set_subtree(f"{prefix}.{key}", sub, origin)


def display_path(path: Path) -> str:
    """The path as the user should read it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@functools.lru_cache(maxsize=1)
def yaml_loader_class() -> Any:
    """OmegaConf's YAML loader (floats like ``1e-4``, duplicate keys and alias bombs rejected)."""
    try:
        from omegaconf.omegaconf import get_yaml_loader

        return get_yaml_loader()
    except ImportError:  # pragma: no cover - older/newer OmegaConf layouts
        return yaml.SafeLoader


def _line_map(node: Any, key_of: Any, prefix: str = "") -> dict[str, int]:
    """Dotted key -> 1-based line for every mapping key of a composed YAML node tree."""
    lines: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        dotted = f"{prefix}{key_of(key_node)}"
        lines[dotted] = key_node.start_mark.line + 1
        lines.update(_line_map(value_node, key_of, dotted + "."))
    return lines


def _check_representable(data: Any, where: str) -> None:
    """Raise ConfigError if OmegaConf cannot hold ``data`` (e.g. binary or set values)."""
    if data is None or not isinstance(data, (dict, list)):
        return
    try:
        OmegaConf.create(data)
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply to be a configuration.") from None
    except GrammarParseError as err:
        raise ConfigError(
            f"{where}: malformed interpolation: {str(err).splitlines()[0]}. Fix the "
            "'${...}' expression, or write a literal '${' as '\\${'."
        ) from None
    except Exception as err:  # noqa: BLE001 - any OmegaConf refusal is a bad value in the file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"{where}: a value cannot be used in a configuration ({first}). Use plain strings, numbers, booleans, lists and mappings."
        ) from None


def parse_yaml(text: str, where: str, *, is_value: bool = False) -> tuple[Any, dict[str, int]]:
    """Parse YAML text the way OmegaConf does.

    Args:
        text: the YAML document.
        where: the file or override, for error messages.
        is_value: the text is a one-line override value (errors then carry no position).

    Returns:
        ``(data, lines)``: the plain Python data (None for an empty document) and
        dotted key -> 1-based line of every mapping key.

    Raises:
        ConfigError: the text is not valid YAML, or holds values OmegaConf cannot store.
    """
    loader = yaml_loader_class()(text)

    def key_of(key_node: Any) -> Any:
        try:
            return loader.construct_object(key_node)
        except Exception:  # noqa: BLE001 - only used for line numbers
            return key_node.value

    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
        lines = {} if node is None else _line_map(node, key_of)
    except yaml.MarkedYAMLError as err:
        mark, start = err.problem_mark or err.context_mark, err.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if mark and start and start.line != mark.line:
            at += f" (in what starts at line {start.line + 1}, column {start.column + 1})"
        problem = " ".join(p for p in (err.context, err.problem) if p).rstrip(".") or "invalid YAML"
        if is_value:
            raise ConfigError(
                f"{where}: the value is not valid YAML ({problem}). Quote values with special characters, e.g. key='\"a: b\"'."
            ) from None
        if err.problem and err.problem.startswith("found duplicate key"):
            key = err.problem[len("found duplicate key") :].strip()
            raise ConfigError(
                f"{where}: duplicate key '{key}'{at}: a key may appear only once in a mapping. Merge the two entries."
            ) from None
        raise ConfigError(
            f"{where}: malformed YAML{at}: {problem}. Fix the syntax there "
            "(check indentation, ':' after keys, and quote values with special "
            "characters)."
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply to be a configuration.") from None
    except Exception as err:  # noqa: BLE001 - the YAML library fails on bad text in many ways
        raise ConfigError(f"{where}: malformed YAML: {err}. Fix the syntax of the file.") from None
    finally:
        loader.dispose()
    _check_representable(data, where)
    return data, lines


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """Read and parse a YAML file.

    Returns:
        ``(data, lines)`` as :func:`parse_yaml`.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, or not valid YAML.
    """
    shown = display_path(path)
    if not path.exists():
        raise ConfigError(f"{shown}: no such file. Check the path.")
    if not path.is_file():
        raise ConfigError(f"{shown}: is not a file; give a YAML file.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: not a UTF-8 text file (byte {err.start}). Save the YAML as UTF-8.") from None
    except OSError as err:
        raise ConfigError(f"{shown}: cannot be read ({err.strerror or err}).") from None
    return parse_yaml(text, shown)


def deep_merge(base: dict, top: dict, *, replace_when: Any = None, prefix: str = "") -> dict:
    """Merge ``top`` into a copy of ``base``: mappings merge key by key, anything else replaces.

    Args:
        base: the lower-priority mapping.
        top: the higher-priority mapping.
        replace_when: optional ``f(dotted_key, old, new) -> bool``; when true for two
            mappings, ``new`` replaces ``old`` instead of merging into it.
        prefix: dotted key of ``base`` (for ``replace_when``).
    """
    merged = copy.deepcopy(base)
    for key, new in top.items():
        old = merged.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict) and not (replace_when and replace_when(dotted, old, new)):
            merged[key] = deep_merge(old, new, replace_when=replace_when, prefix=dotted + ".")
        else:
            merged[key] = copy.deepcopy(new)
    return merged
