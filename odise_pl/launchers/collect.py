"""``odise-pl sweep collect``: a sweep's results, rebuilt from its run directories at any time.

A sweep directory (``RUN_ROOT/SWEEP``) holds one directory per run (``backbone=mae/version_0``,
or ``backbone=mae/seed=0/version_0`` with seeds) and ``sweep.json``, the list of planned runs that
``odise-pl sweep`` writes before it starts.  Collecting reads only those files (never a process's
memory, never writing into a run directory) and writes the derived files of the sweep directory,
each atomically (:mod:`odise_pl.engine.atomic_files`):

* ``summary.md`` / ``summary.csv``: one row per run, with its varied values, parameter counts,
  final metrics and state (``pending``: no directory yet; ``running``: started, no final
  metrics; ``done``: final metrics written; ``failed``: the sweep recorded its error);
* with seeds, ``summary_points.csv`` and a second table in ``summary.md``: per point and metric
  the mean, sample std and 95% confidence interval (Student's t) over its finished seeds, and n;
* ``hparams/`` (on ``collect`` only): TensorBoard's HPARAMS view of every run (state, point, seed,
  final metrics) and of every point (mean / std / CI half-width); ``tensorboard --logdir SWEEP/hparams``.

Example:
    $ odise-pl sweep collect -c experiments/sweeps/backbones_tiny.yaml
    $ odise-pl sweep collect -c runs/sweeps/backbones_tiny        # the sweep directory itself
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odise_pl.config.sweep import SEED_KEY, labels_for, point_of, shown_value
from odise_pl.engine.atomic_files import write_text
from odise_pl.errors import ConfigError
from odise_pl.metrics.replicates import CONFIDENCE, ReplicateStats, replicate_stats

METRICS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU")
PARAMS = ("backbone", "backbone_weights", "params_trainable_M", "params_frozen_M", "backbone_frozen_M")
STATES = ("pending", "running", "done", "failed")
PLAN_FILE = "sweep.json"  # in the sweep directory: the planned runs
FAILED_FILE = "failed.json"  # in a run's directory (SWEEP/NAME): the error of its last attempt
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


@dataclass(frozen=True)
class PointSummary:
    """The replicates of one point: their values, how many are done, statistics per metric."""

    point: str
    values: dict[str, Any]
    planned: int
    stats: dict[str, ReplicateStats]

    @property
    def n(self) -> int:
        return max((s.n for s in self.stats.values()), default=0)


def finished_results(run_parent: Path) -> tuple[str, dict] | None:
    """``(run_dir, results)`` of a finished version of a run (its metrics file has final metrics), or None."""
    for metrics in sorted(run_parent.glob("version_*/metrics*.json")):
        try:
            results = json.loads(metrics.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(results, dict) and isinstance(results.get("final"), dict):
            return str(metrics.parent), results
    return None


def mark_failed(run_parent: Path, error: str) -> None:
    """Record that the last attempt of a run failed (``SWEEP/NAME/failed.json``), for ``collect``."""
    write_text(run_parent / FAILED_FILE, json.dumps({"error": error, "time": time.time()}, indent=2))


def clear_failed(run_parent: Path) -> None:
    """Forget a recorded failure (the run is being retried)."""
    (run_parent / FAILED_FILE).unlink(missing_ok=True)


def _versions(run_parent: Path) -> list[Path]:
    found = [
        (int(m.group(1)), p)
        for p in run_parent.glob("version_*")
        if (m := _VERSION.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run(sweep_dir: Path, entry: PlannedEntry) -> RunRecord:
    """The state and results of one planned run, from its directory ``sweep_dir / entry.name`` (read only)."""
    run_parent = sweep_dir / entry.name
    done = finished_results(run_parent)
    if done is not None:
        run_dir, results = done
        final = {k: float(v) for k, v in results["final"].items() if isinstance(v, (int, float))}
        return RunRecord(entry, "done", run_dir, final, _read_json(Path(run_dir) / "hparams.json"))
    versions = _versions(run_parent)
    run_dir = str(versions[-1]) if versions else ""
    hparams = _read_json(versions[-1] / "hparams.json") if versions else {}
    failure = _read_json(run_parent / FAILED_FILE)
    if failure:
        return RunRecord(entry, "failed", run_dir, {}, hparams, str(failure.get("error", "")))
    return RunRecord(entry, "running" if versions else "pending", run_dir, {}, hparams)


# ----------------------------------------------------------------------------------------- the plan
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
            PlannedEntry(
                str(r["name"]), str(r.get("point") or r["name"]), r.get("seed"), dict(r.get("values") or {})
            )
            for r in plan["runs"]
            if isinstance(r, dict) and "name" in r
        ]
    if _versions(sweep_dir):
        raise ConfigError(
            f"{sweep_dir} is one run's directory (it holds version_*), not a sweep: {WHAT_A_SWEEP_IS}."
        )
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
            f"{sweep_dir} is not a sweep directory (no {PLAN_FILE} and no run directories "
            f"NAME/version_N in it): {WHAT_A_SWEEP_IS}."
        )
    entries = []
    for name in names:
        point, seed = point_of(name)
        values = dict(part.split("=", 1) for part in point.split(",") if "=" in part)
        entries.append(
            PlannedEntry(name, point, seed, {**values, **({SEED_KEY: seed} if seed is not None else {})})
        )
    return entries


def resolve_sweep(
    path: str | Path, overrides: list[str] | None = None, seeds: list[int] | None = None
) -> tuple[Path, list[PlannedEntry]]:
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
    from odise_pl.commands.sweep import plan  # the planning of `odise-pl sweep` itself
    from odise_pl.config.yaml_source import read_yaml

    data, _ = read_yaml(path)
    if not isinstance(data, dict) or "base" not in data:
        raise ConfigError(f"{path} is not a sweep file (no 'base' with 'grid'/'zip'): {WHAT_A_SWEEP_IS}.")
    planned = plan(path, list(overrides or []), seeds=seeds)
    sweep_dir = planned[0].sweep_dir
    if seeds is None and not data.get("seeds"):
        recorded = _read_json(sweep_dir / PLAN_FILE).get("runs") or []
        recorded_seeds = [s for s in dict.fromkeys(r.get("seed") for r in recorded if isinstance(r, dict))
                          if isinstance(s, int)]  # in the order they were given
        if recorded_seeds:  # the sweep ran with --seeds: collect those replicates
            planned = plan(path, list(overrides or []), seeds=recorded_seeds)
    return sweep_dir, entries_of(planned)


def entries_of(planned: Iterable) -> list[PlannedEntry]:
    """Planned entries of ``odise_pl.commands.sweep.PlannedRun`` objects."""
    return [PlannedEntry(p.run.name, p.run.point, p.run.seed, dict(p.run.values)) for p in planned]


# -------------------------------------------------------------------------------------- the tables
def summarize_points(records: list[RunRecord], confidence: float = CONFIDENCE) -> list[PointSummary]:
    """Per point (in plan order), statistics of every metric over its finished replicates."""
    points: dict[str, list[RunRecord]] = {}
    for r in records:
        points.setdefault(r.entry.point, []).append(r)
    out = []
    for point, group in points.items():
        done = [r for r in group if r.state == "done"]
        stats = {m: replicate_stats([r.final[m] for r in done if m in r.final], confidence) for m in METRICS}
        values = {k: v for k, v in group[0].entry.values.items() if k != SEED_KEY}
        out.append(PointSummary(point, values, len(group), stats))
    return out


def _status(record: RunRecord, notes: dict[str, str] | None) -> str:
    """What this sweep invocation did with the run (``notes``), else a failed run's error, else ""."""
    if notes and notes.get(record.entry.name):
        return notes[record.entry.name]
    return f"failed: {record.detail}" if record.state == "failed" and record.detail else ""


def _metric(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def run_rows(
    records: list[RunRecord], notes: dict[str, str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-run table: run, [point], varied values, parameters, metrics, state."""
    keys = list(records[0].entry.values) if records else []
    labels = labels_for(keys)
    seeded = any(r.entry.seed is not None for r in records)
    params = [k for k in PARAMS if k not in labels.values()]  # e.g. 'backbone' when the sweep varies it
    header = [
        "run",
        *(["point"] if seeded else []),
        *labels.values(),
        *params,
        *METRICS,
        "state",
        "status",
        "run_dir",
    ]
    rows = []
    for r in records:
        rows.append(
            [
                r.entry.name,
                *([r.entry.point] if seeded else []),
                *(shown_value(r.entry.values[k]) if k in r.entry.values else "" for k in labels),
                *(str(r.hparams.get(k, "")) for k in params),
                *(_metric(r.final.get(m)) for m in METRICS),
                r.state,
                _status(r, notes),
                r.run_dir,
            ]
        )
    return header, rows


def point_rows(points: list[PointSummary], csv_form: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-point table.  ``csv_form``: separate mean / std / CI columns per metric;
    else one ``mean ± std [low, high]`` cell per metric."""
    keys = list(points[0].values) if points else []
    labels = labels_for(keys)
    header = ["point", *labels.values(), "n", "planned"]
    if csv_form:
        header += [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci95_low", "ci95_high")]
    else:
        header += list(METRICS)
    rows = []
    for p in points:
        row = [
            p.point,
            *(shown_value(p.values[k]) if k in p.values else "" for k in labels),
            str(p.n),
            str(p.planned),
        ]
        for m in METRICS:
            s = p.stats[m]
            if csv_form:
                row += [_metric(s.mean), _metric(s.std), _metric(s.low), _metric(s.high)]
            elif s.n == 0:
                row.append("")
            elif s.n == 1:
                row.append(f"{s.mean:.2f} (n=1)")
            else:
                row.append(f"{s.mean:.2f} ± {s.std:.2f} [{s.low:.2f}, {s.high:.2f}]")
        rows.append(row)
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def state_counts(records: list[RunRecord]) -> str:
    """``"6 runs: 4 done, 1 running, 1 pending, 0 failed"``."""
    counts = {s: sum(r.state == s for r in records) for s in STATES}
    return f"{len(records)} runs: " + ", ".join(
        f"{counts[s]} {s}" for s in ("done", "running", "pending", "failed")
    )


def write_summary(sweep_dir: Path, records: list[RunRecord], notes: dict[str, str] | None = None) -> Path:
    """``summary.md`` and ``summary.csv`` (+ ``summary_points.csv`` with seeds); returns the Markdown file.

    Args:
        sweep_dir: the sweep directory (the files go there; run directories are not touched).
        records: the runs, from :func:`read_run`.
        notes: per run name, what this invocation of the sweep did (``skipped (finished before)``);
            the ``status`` column shows it instead of the state.
    """
    header, rows = run_rows(records, notes)
    lines = [
        f"{state_counts(records)} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        *_markdown(header, rows),
    ]
    write_text(sweep_dir / "summary.csv", _csv(header, rows))
    if any(r.entry.seed is not None for r in records):
        points = summarize_points(records)
        level = f"{round(CONFIDENCE * 100)}%"
        caption = (
            f"Per point over its finished seeds (n): mean ± sample std [{level} confidence interval "
            "of the mean, Student's t with n-1 degrees of freedom]"
        )
        lines += ["", caption, "", *_markdown(*point_rows(points, csv_form=False))]
        write_text(sweep_dir / "summary_points.csv", _csv(*point_rows(points, csv_form=True)))
    return write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------- TensorBoard view
def _hparam(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) and value is not None else shown_value(value)


def write_hparams_view(sweep_dir: Path, records: list[RunRecord]) -> Path:
    """``SWEEP/hparams``: one TensorBoard hparams session per run (and per point with seeds), replaced whole.

    Runs carry ``kind=run``, ``point``, ``seed``, ``state``, their varied values and backbone, and
    their final metrics as ``val/PQ``, ...; points carry ``kind=point``, ``n`` and the mean over
    seeds as ``val/PQ`` with ``std/PQ`` and ``ci95/PQ`` (the interval's half-width).
    """
    from torch.utils.tensorboard import SummaryWriter

    from odise_pl.callbacks.hparams_table import write_hparams_session

    target = sweep_dir / HPARAMS_DIR
    tmp = sweep_dir / f".{HPARAMS_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    labels = labels_for(list(records[0].entry.values)) if records else {}

    def session(folder: Path, hparams: dict, metrics: dict[str, float]) -> None:
        writer = SummaryWriter(str(folder))
        tags = list(metrics) or [f"val/{m}" for m in METRICS[:3]]
        write_hparams_session(writer, {k: _hparam(v) for k, v in hparams.items()}, tags)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, 0)
        writer.close()

    for r in records:
        values = {labels[k]: v for k, v in r.entry.values.items() if k in labels}
        hparams = {
            "kind": "run",
            "run": r.entry.name,
            "point": r.entry.point,
            "seed": -1 if r.entry.seed is None else r.entry.seed,
            "state": r.state,
            **values,
            **{k: r.hparams[k] for k in PARAMS if k in r.hparams and k not in values},
        }
        session(
            tmp / "runs" / r.entry.name, hparams, {f"val/{m}": v for m, v in r.final.items() if m in METRICS}
        )
    if any(r.entry.seed is not None for r in records):
        for p in summarize_points(records):
            metrics = {}
            for m, s in p.stats.items():
                for prefix, value in (("val", s.mean), ("std", s.std), ("ci95", s.half_width)):
                    if not math.isnan(value):
                        metrics[f"{prefix}/{m}"] = value
            values = {labels[k]: v for k, v in p.values.items() if k in labels}
            session(
                tmp / "points" / p.point, {"kind": "point", "point": p.point, "n": p.n, **values}, metrics
            )
    old = sweep_dir / f".{HPARAMS_DIR}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def collect(
    path: str | Path,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    *,
    hparams_view: bool = True,
) -> tuple[Path, list[RunRecord]]:
    """Read every planned run of a sweep file or directory and write the summary files.

    Returns:
        The sweep directory and the run records (in plan order).

    Raises:
        ConfigError: ``path`` is not a sweep file or directory.
    """
    sweep_dir, entries = resolve_sweep(path, overrides, seeds)
    records = [read_run(sweep_dir, e) for e in entries]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_summary(sweep_dir, records)
    if hparams_view:
        write_hparams_view(sweep_dir, records)
    return sweep_dir, records


# ------------------------------------------------------------------------------------ command line
def collect_command(args) -> int:
    """``odise-pl sweep collect -c SWEEP.yaml|SWEEP_DIR [--seeds ...]``: ``args.config``, ``args.overrides``,
    ``args.seeds`` (text or None).  Prints the summary; returns the exit code."""
    from odise_pl.config.sweep import parse_seeds

    seeds = parse_seeds(args.seeds) if getattr(args, "seeds", None) is not None else None
    sweep_dir, records = collect(args.config, list(getattr(args, "overrides", []) or []), seeds)
    print((sweep_dir / "summary.md").read_text())
    print(f"sweep directory: {sweep_dir}  ({state_counts(records)}; HPARAMS view: "
          f"tensorboard --logdir {sweep_dir / HPARAMS_DIR})")
    return 0
