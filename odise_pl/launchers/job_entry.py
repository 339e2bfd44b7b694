"""What a SLURM job of the slurm launcher runs: submitit's job runner (``submitit.core.submission``).

submitit 1.5 looks for plugins with ``pkg_resources``, which recent setuptools no longer ship; where it is
missing, a stand-in built on :mod:`importlib.metadata` takes its place (it only lists entry points).

The launcher's executor names this module as its Python (``python -m odise_pl.launchers.job_entry``), so
the job command ``PYTHON -u -m submitit.core._submit FOLDER`` arrives here with FOLDER as its last argument.
"""

from __future__ import annotations

import sys
import types
from importlib import metadata


def pkg_resources_stand_in() -> types.ModuleType:
    """A ``pkg_resources`` with the one function submitit calls, ``iter_entry_points(group)``."""
    module = types.ModuleType("pkg_resources")

    def iter_entry_points(group: str, name: str | None = None):
        for entry in metadata.entry_points(group=group):
            if name is None or entry.name == name:
                entry_point = types.SimpleNamespace(name=entry.name, module_name=entry.module, load=entry.load)
                yield entry_point

    module.iter_entry_points = iter_entry_points
    return module


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        sys.modules["pkg_resources"] = pkg_resources_stand_in()
    sys.stdout.reconfigure(line_buffering=True)  # as `python -u`: the log shows progress as it happens
    sys.stderr.reconfigure(line_buffering=True)
    from submitit.core.submission import process_job

    process_job(argv[-1])


if __name__ == "__main__":
    main()
