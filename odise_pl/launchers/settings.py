"""Where a sweep's runs execute: the ``launcher`` section of a sweep file and the matching flags.

A sweep file may say how its runs are launched (every key optional; a command-line flag wins)::

    launcher:
      name: slurm            # inline (default: one after another, in this process) | local | slurm
      max_parallel: 2        # local: runs at once, each on its own GPUs
      partition: gpu         # slurm: sbatch's resources
      account: my_project
      qos: normal
      nodes: 1               # -> trainer.num_nodes of every run
      gpus_per_node: 8       # -> trainer.devices (one task per GPU); 0: a CPU job, one task
      cpus_per_task: 10
      mem: 64G               # per node; a number means GB
      time: 240              # minutes
      signal_delay_s: 90     # SIGUSR2 this long before the time limit: checkpoint and requeue
      max_requeues: 3        # requeues after a time-out (preemptions do not count)
      array_parallelism: 64  # at most this many jobs of the array at once
      additional_parameters: {constraint: a100}   # further sbatch options
      setup: [module load cuda/12.1]             # lines run in the job script before the run
      wait: false            # slurm: block until every job has ended (then print the summary)

Example:
    >>> settings = launcher_settings("experiments/sweeps/backbones.yaml", {"name": "slurm"})  # --launcher slurm
    >>> settings.name
    'slurm'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from odise_pl.errors import ConfigError

LAUNCHER_NAMES = ("inline", "local", "slurm")


@dataclass(frozen=True, kw_only=True)
class LauncherSettings:
    """The launcher of a sweep and its resources (see the module docstring for the keys)."""

    name: str = "inline"
    max_parallel: int = 1
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    time: int = 60
    signal_delay_s: int = 90
    max_requeues: int = 3
    array_parallelism: int = 256
    additional_parameters: dict = field(default_factory=dict)
    setup: list = field(default_factory=list)
    wait: bool = False

    def trainer_overrides(self) -> list[str]:
        """``trainer.num_nodes`` / ``trainer.devices`` that follow a SLURM job's resources."""
        if self.name != "slurm":
            return []
        return [f"trainer.num_nodes={self.nodes}", f"trainer.devices={self.tasks_per_node}"]

    @property
    def tasks_per_node(self) -> int:
        """One task (process) per GPU, as Lightning's SLURM environment expects; one on CPU."""
        return max(1, self.gpus_per_node)


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "max_parallel": (int,),
    "partition": (str,),
    "account": (str,),
    "qos": (str,),
    "nodes": (int,),
    "gpus_per_node": (int,),
    "cpus_per_task": (int,),
    "mem": (str, int, float),
    "time": (int,),
    "signal_delay_s": (int,),
    "max_requeues": (int,),
    "array_parallelism": (int,),
    "additional_parameters": (dict,),
    "setup": (list,),
    "wait": (bool,),
}
_POSITIVE = ("max_parallel", "nodes", "cpus_per_task", "time", "array_parallelism")


def _checked(key: str, value: Any, where: str) -> Any:
    if value is None:  # unset: the default
        return None
    types = _TYPES[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: '{key}' must be {wanted}, got {value!r}.")
    if key == "name" and value not in LAUNCHER_NAMES:
        close = difflib.get_close_matches(value, LAUNCHER_NAMES, n=1)
        raise ConfigError(
            f"{where}: unknown launcher {value!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; choose one of {', '.join(LAUNCHER_NAMES)}."
        )
    if (key in _POSITIVE and value < 1) or (key in ("gpus_per_node", "signal_delay_s", "max_requeues") and value < 0):
        raise ConfigError(f"{where}: '{key}' must be {'at least 1' if key in _POSITIVE else '0 or more'}, got {value}.")
    if key == "mem" and not isinstance(value, str):
        return f"{value}G"
    if key == "setup" and not all(isinstance(line, str) for line in value):
        raise ConfigError(f"{where}: 'setup' must be a list of shell lines (strings).")
    return value


def read_launcher_section(path: str | Path) -> dict:
    """The ``launcher`` section of a sweep file, checked (keys and types); ``{}`` when it has none.

    Raises:
        ConfigError: an unknown key or a wrong value (names the file, key and line).
    """
    from odise_pl.config.yaml_source import display_path, read_yaml  # omegaconf: only when a sweep is read

    data, lines = read_yaml(Path(path))
    section = data.get("launcher") if isinstance(data, dict) else None
    if section is None:
        return {}
    shown = display_path(Path(path))
    if isinstance(section, str):  # `launcher: slurm`
        section = {"name": section}
    if not isinstance(section, dict):
        raise ConfigError(
            f"{shown}: 'launcher' (line {lines.get('launcher', '?')}) must be a launcher name or a "
            f"mapping, e.g. 'launcher: {{name: slurm, partition: gpu}}'."
        )
    checked = {}
    for key, value in section.items():
        line = lines.get(f"launcher.{key}", lines.get("launcher"))
        where = f"{shown}: launcher" + (f" (line {line})" if line else "")
        if key not in _TYPES:
            close = difflib.get_close_matches(str(key), _TYPES, n=1)
            raise ConfigError(
                f"{where}: unknown key '{key}'." + (f" Did you mean '{close[0]}'?" if close else "") + f" Valid keys: {', '.join(_TYPES)}."
            )
        checked[key] = _checked(key, value, where)
    return checked


def launcher_settings(path: str | Path, flags: dict[str, Any]) -> LauncherSettings:
    """The sweep file's ``launcher`` section with the command-line ``flags`` (not None) on top."""
    values = read_launcher_section(path)
    for key, value in flags.items():
        if value is not None:
            values[key] = _checked(key, value, "command line")
    known = {f.name for f in fields(LauncherSettings)}
    return LauncherSettings(**{k: v for k, v in values.items() if k in known and v is not None})
