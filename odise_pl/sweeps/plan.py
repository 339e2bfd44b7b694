"""A sweep's runs, planned: each run's full overrides, resolved config and directory.

The sweep file (:mod:`odise_pl.config.sweep`) names a base experiment and the dotted keys to vary;
run ``NAME`` trains in ``ROOT/SWEEP/NAME/version_N`` (``ROOT``: the experiment's ``run.root``).
Command-line ``key=value`` overrides apply to every run (after the sweep's own ``overrides``,
before the varied values, which they may not set).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from odise_pl.errors import ConfigError

if TYPE_CHECKING:
    from odise_pl.config.sweep import SweepRun


@dataclass
class PlannedRun:
    """A sweep run with its full overrides, resolved config and directories."""

    run: SweepRun
    overrides: list[str]
    cfg: object
    sweep_dir: Path
    status: str = "pending"  # pending | done | skipped (finished before) | failed: ...
    run_dir: str = ""
    results: dict = field(default_factory=dict)

    @property
    def run_parent(self) -> Path:
        return self.sweep_dir / self.run.name


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def plan(path: str | Path, cli_overrides: list[str], *, seeds: list[int] | None = None) -> list[PlannedRun]:
    """Expand the sweep and resolve every run's config (``run.root``/``run.name`` set per run).

    ``seeds`` (``--seeds``) replicates every point once per seed, replacing the file's ``seeds``.

    Raises:
        ConfigError: a malformed sweep, an invalid run, or a command-line override of a varied key.
    """
    from omegaconf import OmegaConf, read_write

    from odise_pl.config import load_config
    from odise_pl.config.sweep import expand_sweep, format_value

    runs = expand_sweep(path, validate=False, seeds=seeds)  # each run's config is loaded (validated) below
    planned = []
    for index, run in enumerate(runs, 1):
        varied_keys = set(run.values)
        clash = [o for o in cli_overrides if _key(o) in varied_keys]
        if clash:
            raise ConfigError(
                f"override {clash[0]!r} sets '{_key(clash[0])}', which the sweep {path} varies; "
                "drop it, or change the sweep file's grid/zip."
            )
        split = len(run.overrides) - len(run.values)  # SweepRun.overrides = [*sweep overrides, *varied]
        common, varied = run.overrides[:split], run.overrides[split:]
        overrides = [*common, *cli_overrides, *varied]
        try:
            cfg = load_config(run.base, overrides)
        except ConfigError as err:
            raise ConfigError(f"sweep {path}: run '{run.name}' ({index}/{len(runs)}): {err}") from err
        sweep_dir = Path(str(cfg.run.root)) / run.sweep
        placement = {"run.root": str(sweep_dir), "run.name": run.name, "run.version": None}
        with read_write(cfg):  # the loaded config is read-only
            for key, value in placement.items():
                OmegaConf.update(cfg, key, value, merge=False)
        overrides += [f"{key}={format_value(value)}" for key, value in placement.items()]
        planned.append(PlannedRun(run, overrides, cfg, sweep_dir))
    return planned


def fit_command(p: PlannedRun) -> str:
    """The ``odise-pl fit`` command line of one run (shell-quoted)."""
    return " ".join(["odise-pl", "fit", "-c", shlex.quote(str(p.run.base)), *map(shlex.quote, p.overrides)])


def check_sweep_file(path: str) -> None:
    """Refuse a folder, or an experiment file given where a sweep file is expected (before anything else).

    Raises:
        ConfigError: ``path`` is not a sweep file (names it and says what one looks like).
    """
    from odise_pl.config.yaml_source import read_yaml

    data, _ = read_yaml(Path(path))  # a missing file or a folder is named here
    if not isinstance(data, dict) or "base" not in data:
        raise ConfigError(
            f"{path} is not a sweep file: a sweep file names its experiment ('base: ../X.yaml') and "
            "the keys it varies ('grid:' and/or 'zip:'); see experiments/sweeps/."
        )
