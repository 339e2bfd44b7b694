"""``SWEEP/hparams``: TensorBoard's HPARAMS view of a sweep (``tensorboard --logdir SWEEP/hparams``)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from odise_pl.config.sweep import labels_for, shown_value
from odise_pl.sweeps.plan_file import HPARAMS_DIR
from odise_pl.sweeps.run_state import RunRecord
from odise_pl.sweeps.summary import METRICS, PARAMS, summarize_points


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
        session(tmp / "runs" / r.entry.name, hparams, {f"val/{m}": v for m, v in r.final.items() if m in METRICS})
    if any(r.entry.seed is not None for r in records):
        for p in summarize_points(records):
            metrics = {}
            for m, s in p.stats.items():
                for prefix, value in (("val", s.mean), ("std", s.std), ("ci95", s.half_width)):
                    if not math.isnan(value):
                        metrics[f"{prefix}/{m}"] = value
            values = {labels[k]: v for k, v in p.values.items() if k in labels}
            session(tmp / "points" / p.point, {"kind": "point", "point": p.point, "n": p.n, **values}, metrics)
    old = sweep_dir / f".{HPARAMS_DIR}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
