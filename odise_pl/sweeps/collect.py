"""``odise-pl sweep collect``: a sweep's results, rebuilt from its run directories at any time.

A sweep directory (``RUN_ROOT/SWEEP``) holds one directory per run (``backbone=mae/version_0``,
or ``backbone=mae/seed=0/version_0`` with seeds) and ``sweep.json``, the list of planned runs that
``odise-pl sweep`` writes before it starts (:mod:`.plan_file`).  Collecting reads only those files
(never a process's memory, never writing into a run directory: :mod:`.run_state`) and writes the
derived files of the sweep directory: the summary tables (:mod:`.summary`) and ``hparams/``,
TensorBoard's HPARAMS view of every run and point (:mod:`.hparams_view`).

Example:
    $ odise-pl sweep collect -c experiments/sweeps/backbones_tiny.yaml
    $ odise-pl sweep collect -c runs/sweeps/backbones_tiny        # the sweep directory itself
"""

from __future__ import annotations

from pathlib import Path

from odise_pl.sweeps.plan_file import resolve_sweep
from odise_pl.sweeps.run_state import RunRecord, read_run
from odise_pl.sweeps.summary import write_summary


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
        from odise_pl.sweeps.hparams_view import write_hparams_view

        write_hparams_view(sweep_dir, records)
    return sweep_dir, records
