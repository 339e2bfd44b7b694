"""Launch records: ``SWEEP_DIR/launches/launch_NNN.json``, one per ``odise-pl sweep`` that launched runs.

A record lists, per run, what ``odise-pl sweep status`` needs to find it again: the run's name and
directory, its log file, and (slurm) its job id and submitit folder, or (local) the launching process.
Records are numbered and never overwritten: the newest record of a run is its current launch.

Example:
    >>> import tempfile
    >>> sweep_dir = Path(tempfile.mkdtemp())
    >>> path = write_record(sweep_dir, {"launcher": "slurm", "runs": [{"name": "backbone=mae", "job_id": "12_0"}]})
    >>> path.name
    'launch_000.json'
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from odise_pl.atomic_files import write_new

RECORDS = "launches"


def write_record(sweep_dir: Path, record: dict) -> Path:
    """Write ``record`` as the next ``launch_NNN.json`` atomically (complete or absent, never overwriting one:
    :func:`~odise_pl.atomic_files.write_new`)."""
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
    return write_new(Path(sweep_dir) / RECORDS / "launch_{n:03d}.json", json.dumps(record, indent=2))


def read_records(sweep_dir: Path) -> list[dict]:
    """Every launch record of a sweep, oldest first (unreadable ones skipped)."""
    records = []
    for path in sorted((Path(sweep_dir) / RECORDS).glob("launch_*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            records.append({**record, "path": str(path)})
    return records


def latest_launches(sweep_dir: Path) -> dict[str, dict]:
    """``{run name: (its entry of the newest record naming it) + the record's launcher and host}``."""
    latest: dict[str, dict] = {}
    for record in read_records(sweep_dir):
        for entry in record.get("runs", []):
            if isinstance(entry, dict) and "name" in entry:
                latest[entry["name"]] = {
                    "launcher": record.get("launcher"),
                    "host": record.get("host"),
                    "launcher_pid": record.get("pid"),
                    "record": record["path"],
                    **entry,
                }
    return latest
