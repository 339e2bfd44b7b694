"""A sweep's summary files, rebuilt from its run records: ``summary.md`` / ``summary.csv``, one row per run
(varied values, parameter counts, final metrics, state); with seeds ``summary_points.csv`` and a second table:
per point and metric the mean, sample std and 95% confidence interval (Student's t) over its finished seeds.
Each file is written atomically (:mod:`odise_pl.atomic_files`)."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odise_pl.atomic_files import write_text
from odise_pl.config.sweep import SEED_KEY, labels_for, shown_value
from odise_pl.metrics.replicates import CONFIDENCE, ReplicateStats, replicate_stats
from odise_pl.sweeps.run_state import STATES, RunRecord

METRICS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU")
PARAMS = ("backbone", "backbone_weights", "params_trainable_M", "params_frozen_M", "backbone_frozen_M")


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


def run_rows(records: list[RunRecord], notes: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
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
    return f"{len(records)} runs: " + ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "pending", "failed"))


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


def write_sweep_summary(planned: list) -> Path | None:
    """The summary files of planned runs (:class:`~odise_pl.sweeps.plan.PlannedRun`), read from their
    directories; what this invocation did with a run (``p.status``) shows in its status column.
    Returns the Markdown file (None: nothing planned)."""
    from odise_pl.sweeps.plan_file import entries_of
    from odise_pl.sweeps.run_state import read_run

    if not planned:
        return None
    sweep_dir = planned[0].sweep_dir
    records = [read_run(sweep_dir, entry) for entry in entries_of(planned)]
    notes = {p.run.name: p.status for p in planned if p.status != "pending"}
    return write_summary(sweep_dir, records, notes)
