"""Metric dicts of a run and the files they go to (``metrics.json`` / ``metrics.md``, never overwritten)."""

from __future__ import annotations

import json
from pathlib import Path

from odise_pl.atomic_files import next_free_path, write_new, write_text

#: the columns of every results table
TABLE_COLUMNS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU")


def merge_metrics(out: list[dict]) -> dict:
    """Lightning's list of logged dicts -> one ``{metric: float}`` (``val/PQ`` -> ``PQ``)."""
    merged: dict = {}
    for d in out:
        merged.update({k.split("/", 1)[-1]: float(v) for k, v in d.items()})
    return merged


def write_results(run_dir: Path, results: dict) -> Path:
    """``metrics.json`` and ``metrics.md`` (``metrics.N.*`` when a resumed run has them already); the JSON's path.

    The JSON is written first and claims its number (:func:`~odise_pl.atomic_files.write_new`),
    so the metrics are never lost to a failing table, and two writers never share a number.
    """
    first = next_free_path(Path(run_dir) / "metrics.json", companions=(".md",))
    path = write_new(first, json.dumps(results, indent=2), companions=(".md",))
    write_text(path.with_suffix(".md"), format_table(results))
    return path


def format_table(results: dict) -> str:
    """Markdown table of PQ/SQ/RQ (All/Things/Stuff) and mIoU for each evaluated stage, then a note
    naming the mIoU convention by detectron2 version when a stage has an mIoU."""
    from odise_pl.metrics.semantic_iou import miou_footnote

    cols = TABLE_COLUMNS
    rows = [(k, v) for k, v in results.items() if isinstance(v, dict)]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.1f}" if c in m else "-" for c in cols) + " |")
    if any("mIoU" in m for _, m in rows):
        lines += ["", miou_footnote()]
    return "\n".join(lines) + "\n"
