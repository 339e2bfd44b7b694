"""Sweep launchers: where the runs of ``odise-pl sweep`` execute.

* ``inline`` (default): one after another in this process (:mod:`.inline`);
* ``local``: ``--max-parallel K`` processes at once on this machine, on disjoint GPUs (:mod:`.local`);
* ``slurm``: one SLURM job per run through submitit, a job array when several are pending (:mod:`.slurm`).

A launcher is a function ``(planned runs, LauncherSettings) -> number of failed runs``; adding one is a
module and one line in :data:`LAUNCHERS`. Which one runs, and with which resources, comes from the sweep
file's ``launcher`` section and the command line (:mod:`.settings`). ``odise-pl sweep status`` reads what
they leave behind (:mod:`.status`, :mod:`.records`).
"""

from __future__ import annotations

import importlib

from odise_pl.launchers.settings import LAUNCHER_NAMES, LauncherSettings, launcher_settings

#: launcher name -> "module:function" (imported when used: submitit only for slurm)
LAUNCHERS: dict[str, str] = {
    "inline": "odise_pl.launchers.inline:run_inline",
    "local": "odise_pl.launchers.local:run_local",
    "slurm": "odise_pl.launchers.slurm:run_slurm",
}
assert tuple(LAUNCHERS) == LAUNCHER_NAMES


def launch(planned: list, settings: LauncherSettings) -> int:
    """Run (or submit) the planned runs with the launcher ``settings.name``; returns the number of failed runs."""
    module, function = LAUNCHERS[settings.name].split(":")
    return getattr(importlib.import_module(module), function)(planned, settings)


__all__ = ["LAUNCHERS", "LAUNCHER_NAMES", "LauncherSettings", "launch", "launcher_settings"]
