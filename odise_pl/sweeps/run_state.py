"""What a sweep run's directory says about it: pending, running, done or failed (read only).

Whether a run is finished, and which checkpoint it resumes from, is the engine's one rule
(:func:`odise_pl.engine.run_dirs.finished_version`, :func:`~odise_pl.engine.run_dirs.resume_checkpoint`);
this module adds a sweep's own record of a failed attempt (``SWEEP/NAME/failed.json``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from odise_pl.atomic_files import write_text
from odise_pl.engine.run_dirs import finished_version
from odise_pl.sweeps.plan_file import PlannedEntry

STATES = ("pending", "running", "done", "failed")
FAILED_FILE = "failed.json"  # in a run's directory (SWEEP/NAME): the error of its last attempt
VERSION = re.compile(r"version_(\d+)$")


@dataclass
class RunRecord:
    """What a run's directory says about it.

    Attributes:
        entry: the planned run.
        state: one of ``STATES``.
        run_dir: the version directory read (the finished one, else the newest), or "".
        final: final metrics (``{"PQ": 56.0, ...}``), empty unless done.
        hparams: the run's ``hparams.json`` (backbone, parameter counts), empty if not written yet.
        detail: the error of a failed run, or "".
    """

    entry: PlannedEntry
    state: str
    run_dir: str = ""
    final: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)
    detail: str = ""


def mark_failed(run_parent: Path, error: str) -> None:
    """Record that the last attempt of a run failed (``SWEEP/NAME/failed.json``), for ``collect``."""
    write_text(run_parent / FAILED_FILE, json.dumps({"error": error, "time": time.time()}, indent=2))


def clear_failed(run_parent: Path) -> None:
    """Forget a recorded failure (the run is being retried)."""
    (run_parent / FAILED_FILE).unlink(missing_ok=True)


def versions(run_parent: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in run_parent.glob("version_*") if (m := VERSION.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run(sweep_dir: Path, entry: PlannedEntry) -> RunRecord:
    """The state and results of one planned run, from its directory ``sweep_dir / entry.name`` (read only)."""
    run_parent = sweep_dir / entry.name
    done = finished_version(run_parent)
    if done is not None:
        run_dir, results = done
        final = {k: float(v) for k, v in results["final"].items() if isinstance(v, (int, float))}
        return RunRecord(entry, "done", run_dir, final, read_json(Path(run_dir) / "hparams.json"))
    found = versions(run_parent)
    run_dir = str(found[-1]) if found else ""
    hparams = read_json(found[-1] / "hparams.json") if found else {}
    failure = read_json(run_parent / FAILED_FILE)
    if failure:
        return RunRecord(entry, "failed", run_dir, {}, hparams, str(failure.get("error", "")))
    return RunRecord(entry, "running" if found else "pending", run_dir, {}, hparams)
