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
    seeds: [0, 1, 2]                      # optional; every point once per seed (top-level ``seed``)

Runs are every combination of the grid values with every row of the zip
values (the grid's first key varies slowest, the zip rows fastest).  A value
may be a whole section, e.g. ``model.backbone: [{name: mae}, {name: dino}]``
(a section whose ``name`` changes starts afresh); run names show its string
values (``backbone=mae``).  A run's overrides are the sweep's ``overrides`` followed by its varied values, so the
varied values win.

With ``seeds``, every point (a combination of grid and zip values) runs once per seed: run
``backbone=mae/seed=0`` gets ``seed=0`` and trains in ``SWEEP/backbone=mae/seed=0/version_N``; its
``point`` is ``backbone=mae`` (the name without the seed), which the summary groups replicates by.

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

SWEEP_KEYS = ("name", "base", "overrides", "grid", "zip", "seeds", "launcher")  # launcher: odise_pl.launchers
#: the experiment key that ``seeds`` sets (:class:`odise_pl.config.schema.ExperimentConfig.seed`)
SEED_KEY = "seed"
#: seeds that Lightning's ``seed_everything`` accepts
SEED_RANGE = (0, 2**32 - 1)
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
        values: the varied dotted keys and their values for this run (``seed`` included when the
            sweep has ``seeds``).
        point: the name without the seed (``"backbone=mae"``): the replicates of one point share it.
            Without ``seeds``, the name itself.
        seed: the run's seed when the sweep has ``seeds``, else None.
    """

    name: str
    overrides: list[str]
    base: Path
    sweep: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    point: str = ""
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.point:
            object.__setattr__(self, "point", self.name)


class _OverrideDumper(yaml.SafeDumper):
    """Quotes exactly the strings that the config loader would read as something else."""


_OverrideDumper.yaml_implicit_resolvers = dict(yaml_loader_class().yaml_implicit_resolvers)


def _flow_yaml(value: Any, *, allow_unicode: bool = True) -> str:
    text = yaml.dump(
        value, Dumper=_OverrideDumper, default_flow_style=True, width=2**31, sort_keys=False, allow_unicode=allow_unicode
    ).strip()
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
    text = _flow_yaml(value, allow_unicode=False)  # line breaks such as U+0085 in a key: escaped as "\N"
    if _reads_back(text, value):
        return text
    try:  # PyYAML mangles a few control characters; JSON escapes them and is YAML too
        text = _NOT_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        text = ""
    if text and _reads_back(text, value):
        return text
    raise ConfigError(
        f"the sweep value {value!r} cannot be written as a command-line override; use plain strings, numbers, lists and mappings."
    )


def labels_for(keys: list[str]) -> dict[str, str]:
    """Short unique labels for dotted keys: the last part, or the section for ``.name``."""

    def parts_of(key: str) -> list[str]:
        parts = key.split(".")
        return parts[:-1] if parts[-1] == "name" and len(parts) > 1 else parts

    depth = {key: 1 for key in keys}
    while True:
        labels = {key: ".".join(parts_of(key)[-depth[key] :]) for key in keys}
        clashes = {k for k in keys if list(labels.values()).count(labels[k]) > 1 and depth[k] < len(parts_of(k))}
        if not clashes:
            return labels
        for key in clashes:
            depth[key] += 1


def shown_value(value: Any) -> str:
    """A varied value as it appears in a run name: list items joined by '_'; a mapping (a whole
    section) by its string values only, which name things (``{name: dino, pretrained: null,
    tiny_version: v1, out_channels: 32}`` shows as ``dino_v1``); sizes and switches are left out.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "_".join(shown_value(v) for v in value)
    if isinstance(value, dict):
        return "_".join(shown_value(v) for v in value.values() if isinstance(v, str)) or "section"
    return format_value(value)


def _run_name(values: dict[str, Any], labels: dict[str, str]) -> str:
    parts = [f"{labels[key]}={_UNSAFE.sub('_', shown_value(value)).strip('_')}" for key, value in values.items()]
    name = ",".join(parts).strip(".") or "run"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9]}-{digest}"
    return name


def _where(shown: str, lines: dict[str, int], key: str) -> str:
    return f"{shown}: '{key}'" + (f" (line {lines[key]})" if key in lines else "")


def _value_lists(spec: Any, kind: str, shown: str, lines: dict[str, int]) -> dict[str, list]:
    """Validate the ``grid`` or ``zip`` mapping: dotted key -> non-empty list."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{_where(shown, lines, kind)} must map dotted keys to lists of values, "
            f"e.g. '{kind}: {{model.inference.classifier: [clip, ensemble]}}'."
        )
    out = {}
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{_where(shown, lines, f'{kind}.{key}')} must be a non-empty list of values, got {values!r}.")
        out[str(key)] = values
    return out


def point_of(run_name: str) -> tuple[str, int | None]:
    """``"backbone=mae/seed=0"`` -> ``("backbone=mae", 0)``; a name without a seed part: ``(name, None)``."""
    point, _, last = str(run_name).rpartition("/")
    key, _, value = last.partition("=")
    if point and key == SEED_KEY and value.lstrip("-").isdigit():
        return point, int(value)
    return str(run_name), None


def check_seeds(seeds: Any, where: str) -> list[int]:
    """Validate a list of seeds: a non-empty list of distinct integers in ``SEED_RANGE``.

    Args:
        seeds: the value read from a sweep file's ``seeds`` or from ``--seeds``.
        where: how the message names its source, e.g. ``"experiments/sweeps/s.yaml: 'seeds' (line 4)"``.

    Raises:
        ConfigError: naming ``where``, the offending value and what to write instead.
    """
    example = "e.g. 'seeds: [0, 1, 2]' (or --seeds 0,1,2)"
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{where} must be a non-empty list of integer seeds, {example}; got {seeds!r}.")
    low, high = SEED_RANGE
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{where}: seed {seed!r} is not an integer; {example}.")
        if not low <= seed <= high:
            raise ConfigError(f"{where}: seed {seed} is out of range; seeds are integers from {low} to {high}.")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{where}: seed {repeated[0]} is listed more than once; each seed names one replicate, list it once.")
    return list(seeds)


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> ``[0, 1, 2]``.

    Raises:
        ConfigError: a part that is not an integer, or a repeated seed (the message names ``--seeds``).
    """
    parts = [part.strip() for part in str(text).split(",")]
    values: list[Any] = []
    for part in parts:
        try:
            values.append(int(part))
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not an integer; give comma-separated integers, e.g. --seeds 0,1,2.") from None
    return check_seeds(values, f"--seeds {text!r}")


def _sweep_seeds(
    data: dict, shown: str, lines: dict[str, int], override: list[int] | None, varied: list[str], common: list[str]
) -> list[int] | None:
    """The sweep's seeds (``override``, from the command line, replaces the file's), checked against
    the keys the sweep sets otherwise."""
    seeds = override
    if seeds is None and data.get("seeds") is not None:
        seeds = check_seeds(data["seeds"], _where(shown, lines, "seeds"))
    if seeds is None:
        return None
    if SEED_KEY in varied:
        raise ConfigError(
            f"{shown}: '{SEED_KEY}' is varied by 'grid'/'zip' and by 'seeds'; keep it in one ('seeds' makes replicates of every point)."
        )
    fixed = [o for o in common if o.split("=", 1)[0].strip() == SEED_KEY]
    if fixed:
        raise ConfigError(
            f"{_where(shown, lines, 'overrides')} sets {fixed[0]!r}, but the sweep has "
            f"'seeds', which set '{SEED_KEY}' per run; drop one of them."
        )
    return seeds


def _read_sweep(path: Path) -> tuple[dict, dict[str, int], str]:
    shown = display_path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: a sweep file must be a mapping with 'base' and 'grid' and/or 'zip', got {type(data).__name__}.")
    for key in data:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{shown}: unknown sweep key '{key}'"
                + (f" (line {lines[str(key)]})" if str(key) in lines else "")
                + f".{hint} Valid keys: {', '.join(SWEEP_KEYS)}."
            )
    return data, lines, shown


def expand_sweep(path: PathLike, *, validate: bool = True, seeds: list[int] | None = None) -> list[SweepRun]:
    """Read a sweep file and list its runs.

    Args:
        path: the sweep YAML file.
        validate: load every run's configuration to check it (recommended).
        seeds: replicate every point once per seed (``--seeds``); replaces the file's ``seeds``.

    Returns:
        The runs, in grid order; with seeds, each point's replicates one after another.

    Raises:
        ConfigError: the sweep file is malformed (unknown key, ``zip`` lists of
            different lengths, ...), or a run's configuration is invalid (the
            message names the run).
    """
    path = Path(path)
    data, lines, shown = _read_sweep(path)
    base = data.get("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(
            f"{shown}: 'base' must name the experiment file the runs start from "
            "(relative to the sweep file), e.g. 'base: ../odise_label_coco.yaml'."
        )
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
        raise ConfigError(
            f"{_where(shown, lines, 'zip')}: all lists must have the same length, but "
            f"{listed}. Make them equal, or move independent keys to 'grid'."
        )
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ConfigError(f"{shown}: '{both[0]}' is in both 'grid' and 'zip'; keep it in one.")
    if seeds is not None:
        seeds = check_seeds(seeds, "--seeds")
    seeds = _sweep_seeds(data, shown, lines, seeds, [*grid, *zipped], common)

    zip_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] or [{}]
    labels = labels_for([*grid, *zipped])
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
            if seeds is None:
                runs.append(SweepRun(name, [*common, *varied], base_path, sweep_name, values))
                continue
            for seed in seeds:
                runs.append(
                    SweepRun(
                        f"{name}/{SEED_KEY}={seed}",
                        [*common, *varied, f"{SEED_KEY}={seed}"],
                        base_path,
                        sweep_name,
                        {**values, SEED_KEY: seed},
                        point=name,
                        seed=seed,
                    )
                )
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
