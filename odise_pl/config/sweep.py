"""Sweep files: one experiment file, many runs that differ in a few keys.

A sweep file is YAML::

    name: classifier_ablation             # optional; default: the file's stem
    base: ../odise_label_coco.yaml        # relative to the sweep file
    overrides: [trainer.max_steps=2000]   # optional; applied to every run
    grid:                                 # optional; the cartesian product
      model.inference.classifier: [diffusion, clip, ensemble]
    zip:                                  # optional; equal-length lists, taken together
      model.inference.alpha: [0.2, 0.3]
      model.inference.beta: [0.6, 0.7]

Runs are every combination of the grid values with every row of the zip
values (the grid's first key varies slowest, the zip rows fastest).  A value
may be a whole section, e.g. ``model.backbone: [{name: mae}, {name: dino}]``
(a section whose ``name`` changes starts afresh); run names show its string
values (``backbone=mae``).  A run's overrides are the sweep's ``overrides`` followed by its varied values, so the
varied values win.

Example (paths relative to the project root):
    >>> runs = expand_sweep("experiments/sweeps/classifiers_tiny.yaml")
    >>> [r.name for r in runs]
    ['classifier=diffusion', 'classifier=clip', 'classifier=ensemble']
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odise_pl.config.loader import PathLike, load_config
from odise_pl.config.yaml_source import display_path, parse_yaml, read_yaml, yaml_loader_class
from odise_pl.errors import ConfigError

SWEEP_KEYS = ("name", "base", "overrides", "grid", "zip")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]+")
_MAX_NAME = 120
_NOT_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep.

    Attributes:
        name: filesystem-safe, unique within the sweep, made from the varied
            values (e.g. ``"backbone=clip,t=0"``).
        overrides: ``key=value`` strings to apply to ``base``.
        base: the experiment file.
        sweep: the sweep's name.
        values: the varied dotted keys and their values for this run.
    """

    name: str
    overrides: list[str]
    base: Path
    sweep: str = ""
    values: dict[str, Any] = field(default_factory=dict)


class _OverrideDumper(yaml.SafeDumper):
    """Quotes exactly the strings that the config loader would read as something else."""


_OverrideDumper.yaml_implicit_resolvers = dict(yaml_loader_class().yaml_implicit_resolvers)


def _flow_yaml(value: Any) -> str:
    text = yaml.dump(value, Dumper=_OverrideDumper, default_flow_style=True, width=2**31,
                     sort_keys=False, allow_unicode=True).strip()
    for marker in ("\n...", "..."):
        if text.endswith(marker):
            return text[: -len(marker)].strip()
    return text


def _reads_back(text: str, value: Any) -> bool:
    try:
        parsed, _ = parse_yaml(text, "value")
    except ConfigError:
        return False
    return parsed == value or _flow_yaml(parsed) == _flow_yaml(value)  # the latter for NaN


def format_value(value: Any) -> str:
    """A value as YAML flow text that parses back to the same value in an override.

    Raises:
        ConfigError: the value cannot be written so (a string no YAML form keeps intact).
    """
    text = _flow_yaml(value)
    if _reads_back(text, value):
        return text
    try:  # PyYAML mangles a few control characters; JSON escapes them and is YAML too
        text = _NOT_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        text = ""
    if text and _reads_back(text, value):
        return text
    raise ConfigError(f"the sweep value {value!r} cannot be written as a command-line override; "
                      "use plain strings, numbers, lists and mappings.")


def _labels(keys: list[str]) -> dict[str, str]:
    """Short unique labels for dotted keys: the last part, or the section for ``.name``."""
    def parts_of(key: str) -> list[str]:
        parts = key.split(".")
        return parts[:-1] if parts[-1] == "name" and len(parts) > 1 else parts

    depth = {key: 1 for key in keys}
    while True:
        labels = {key: ".".join(parts_of(key)[-depth[key]:]) for key in keys}
        clashes = {k for k in keys if list(labels.values()).count(labels[k]) > 1
                   and depth[k] < len(parts_of(k))}
        if not clashes:
            return labels
        for key in clashes:
            depth[key] += 1


def _shown(value: Any) -> str:
    """A varied value as it appears in a run name: list items joined by '_'; a mapping (a whole
    section) by its string values only, which name things (``{name: dino, pretrained: null,
    tiny_version: v1, out_channels: 32}`` shows as ``dino_v1``); sizes and switches are left out.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "_".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return "_".join(_shown(v) for v in value.values() if isinstance(v, str)) or "section"
    return format_value(value)


def _run_name(values: dict[str, Any], labels: dict[str, str]) -> str:
    parts = [f"{labels[key]}={_UNSAFE.sub('_', _shown(value)).strip('_')}" for key, value in values.items()]
    name = ",".join(parts).strip(".") or "run"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}-{digest}"
    return name


def _where(shown: str, lines: dict[str, int], key: str) -> str:
    return f"{shown}: '{key}'" + (f" (line {lines[key]})" if key in lines else "")


def _value_lists(spec: Any, kind: str, shown: str, lines: dict[str, int]) -> dict[str, list]:
    """Validate the ``grid`` or ``zip`` mapping: dotted key -> non-empty list."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{_where(shown, lines, kind)} must map dotted keys to lists of values, "
                          f"e.g. '{kind}: {{model.inference.classifier: [clip, ensemble]}}'.")
    out = {}
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{_where(shown, lines, f'{kind}.{key}')} must be a non-empty list "
                              f"of values, got {values!r}.")
        out[str(key)] = values
    return out


def _read_sweep(path: Path) -> tuple[dict, dict[str, int], str]:
    shown = display_path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: a sweep file must be a mapping with 'base' and 'grid' "
                          f"and/or 'zip', got {type(data).__name__}.")
    for key in data:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{shown}: unknown sweep key '{key}'"
                              + (f" (line {lines[str(key)]})" if str(key) in lines else "")
                              + f".{hint} Valid keys: {', '.join(SWEEP_KEYS)}.")
    return data, lines, shown


def expand_sweep(path: PathLike, *, validate: bool = True) -> list[SweepRun]:
    """Read a sweep file and list its runs.

    Args:
        path: the sweep YAML file.
        validate: load every run's configuration to check it (recommended).

    Returns:
        The runs, in grid order.

    Raises:
        ConfigError: the sweep file is malformed (unknown key, ``zip`` lists of
            different lengths, ...), or a run's configuration is invalid (the
            message names the run).
    """
    path = Path(path)
    data, lines, shown = _read_sweep(path)
    base = data.get("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{shown}: 'base' must name the experiment file the runs start from "
                          "(relative to the sweep file), e.g. 'base: ../odise_label_coco.yaml'.")
    base_path = Path(os.path.normpath(path.parent / base))
    common = data.get("overrides") or []
    if not isinstance(common, list) or not all(isinstance(o, str) for o in common):
        raise ConfigError(f"{_where(shown, lines, 'overrides')} must be a list of 'key=value' strings.")
    sweep_name = data.get("name", path.stem)
    if not isinstance(sweep_name, str) or not sweep_name:
        raise ConfigError(f"{_where(shown, lines, 'name')} must be a non-empty string.")
    sweep_name = _UNSAFE.sub("_", sweep_name)  # it names a folder
    grid = _value_lists(data.get("grid"), "grid", shown, lines)
    zipped = _value_lists(data.get("zip"), "zip", shown, lines)
    lengths = {key: len(values) for key, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"'{k}' has {n}" for k, n in lengths.items())
        raise ConfigError(f"{_where(shown, lines, 'zip')}: all lists must have the same length, but "
                          f"{listed}. Make them equal, or move independent keys to 'grid'.")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ConfigError(f"{shown}: '{both[0]}' is in both 'grid' and 'zip'; keep it in one.")

    zip_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] or [{}]
    labels = _labels([*grid, *zipped])
    runs: list[SweepRun] = []
    seen: dict[str, int] = {}
    for combo in itertools.product(*grid.values()):
        for row in zip_rows:
            values = {**dict(zip(grid, combo)), **row}
            name = _run_name(values, labels) if values else sweep_name
            if name in seen:
                seen[name] += 1
                name = f"{name}-{seen[name]}"
            seen.setdefault(name, 1)
            varied = [f"{key}={format_value(value)}" for key, value in values.items()]
            runs.append(SweepRun(name, [*common, *varied], base_path, sweep_name, values))
    if validate:
        _validate_runs(runs, shown)
    return runs


def _validate_runs(runs: list[SweepRun], shown: str) -> None:
    """Load every run's configuration; raise one ConfigError naming each failing run."""
    failures = []
    for index, run in enumerate(runs, 1):
        try:
            load_config(run.base, run.overrides)
        except ConfigError as err:
            failures.append(f"run '{run.name}' ({index}/{len(runs)}): {err}")
    if len(failures) == 1:
        raise ConfigError(f"sweep {shown}: {failures[0]}")
    if failures:
        listed = "\n".join(f"  - {f}" for f in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise ConfigError(f"sweep {shown}: {len(failures)} of {len(runs)} runs are invalid:\n{listed}{more}")
