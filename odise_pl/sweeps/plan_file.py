"""``sweep.json``: a sweep's planned runs, written before any starts, so that its directory alone can be
collected (:func:`resolve_sweep` reads a sweep file or such a directory)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odise_pl.atomic_files import write_text
from odise_pl.config.sweep import SEED_KEY, point_of
from odise_pl.errors import ConfigError

PLAN_FILE = "sweep.json"  # in the sweep directory: the planned runs
HPARAMS_DIR = "hparams"  # in the sweep directory: the collected TensorBoard view
WHAT_A_SWEEP_IS = (
    "a sweep is a YAML file with 'base' and 'grid'/'zip' (see experiments/sweeps/), or the "
    f"directory `odise-pl sweep` writes its runs into (it holds {PLAN_FILE}, e.g. runs/sweeps/NAME)"
)
_VERSION = re.compile(r"version_(\d+)$")


@dataclass(frozen=True)
class PlannedEntry:
    """One planned run of a sweep: its name (a path below the sweep directory), point, seed, values."""

    name: str
    point: str
    seed: int | None = None
    values: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _has_versions(folder: Path) -> bool:
    return any(_VERSION.match(p.name) and p.is_dir() for p in folder.glob("version_*"))


def write_plan(sweep_dir: Path, entries: list[PlannedEntry], source: str = "") -> Path:
    """``sweep.json``: the planned runs, so that the sweep directory alone can be collected."""
    payload = {
        "source": source,
        "runs": [{"name": e.name, "point": e.point, "seed": e.seed, "values": e.values} for e in entries],
    }
    return write_text(sweep_dir / PLAN_FILE, json.dumps(payload, indent=2, default=str))


def read_plan(sweep_dir: Path) -> list[PlannedEntry]:
    """The planned runs of a sweep directory (``sweep.json``; else its run directories, found on disk).

    Raises:
        ConfigError: ``sweep_dir`` is not a sweep directory (the message says what one is).
    """
    plan = _read_json(sweep_dir / PLAN_FILE)
    if isinstance(plan.get("runs"), list):
        return [
            PlannedEntry(str(r["name"]), str(r.get("point") or r["name"]), r.get("seed"), dict(r.get("values") or {}))
            for r in plan["runs"]
            if isinstance(r, dict) and "name" in r
        ]
    if _has_versions(sweep_dir):
        raise ConfigError(f"{sweep_dir} is one run's directory (it holds version_*), not a sweep: {WHAT_A_SWEEP_IS}.")
    names = sorted(
        {
            str(v.parent.relative_to(sweep_dir))
            for v in sweep_dir.glob("**/version_*")
            if v.is_dir()
            and _VERSION.match(v.name)
            and (v / "config.yaml").is_file()
            and v.parent != sweep_dir
            and HPARAMS_DIR not in v.relative_to(sweep_dir).parts[:1]
        }
    )
    if not names:
        raise ConfigError(
            f"{sweep_dir} is not a sweep directory (no {PLAN_FILE} and no run directories NAME/version_N in it): {WHAT_A_SWEEP_IS}."
        )
    entries = []
    for name in names:
        point, seed = point_of(name)
        values = dict(part.split("=", 1) for part in point.split(",") if "=" in part)
        entries.append(PlannedEntry(name, point, seed, {**values, **({SEED_KEY: seed} if seed is not None else {})}))
    return entries


def resolve_sweep(path: str | Path, overrides: list[str] | None = None, seeds: list[int] | None = None) -> tuple[Path, list[PlannedEntry]]:
    """The sweep directory and planned runs of a sweep file (as ``odise-pl sweep`` plans them) or directory.

    A sweep file run with ``--seeds`` is collected with the same seeds: given here, or read from the
    sweep directory's ``sweep.json`` when not.

    Raises:
        ConfigError: ``path`` is missing, or neither a sweep file nor a sweep directory.
    """
    path = Path(path)
    if path.is_dir():
        return path, read_plan(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file or directory; {WHAT_A_SWEEP_IS}.")
    from odise_pl.config.yaml_source import read_yaml
    from odise_pl.sweeps.plan import plan  # the planning of `odise-pl sweep` itself

    data, _ = read_yaml(path)
    if not isinstance(data, dict) or "base" not in data:
        raise ConfigError(f"{path} is not a sweep file (no 'base' with 'grid'/'zip'): {WHAT_A_SWEEP_IS}.")
    planned = plan(path, list(overrides or []), seeds=seeds)
    sweep_dir = planned[0].sweep_dir
    if seeds is None and not data.get("seeds"):
        recorded = _read_json(sweep_dir / PLAN_FILE).get("runs") or []
        recorded_seeds = [
            s for s in dict.fromkeys(r.get("seed") for r in recorded if isinstance(r, dict)) if isinstance(s, int)
        ]  # in the order they were given
        if recorded_seeds:  # the sweep ran with --seeds: collect those replicates
            planned = plan(path, list(overrides or []), seeds=recorded_seeds)
    return sweep_dir, entries_of(planned)


def entries_of(planned: Iterable) -> list[PlannedEntry]:
    """Planned entries of :class:`odise_pl.sweeps.plan.PlannedRun` objects."""
    return [PlannedEntry(p.run.name, p.run.point, p.run.seed, dict(p.run.values)) for p in planned]
