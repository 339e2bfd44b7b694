"""The ``inline`` launcher: every run of a sweep, one after another, in this process (the default).

:func:`fit_planned` is also what one SLURM job runs for its run (:mod:`odise_pl.launchers.slurm`): a run
with final metrics is skipped, an unfinished one resumes from its newest ``last.ckpt``.
"""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from odise_pl.sweeps.plan import PlannedRun


def skip_if_finished(p: PlannedRun) -> bool:
    """A run with final metrics is not run again: ``p`` takes its results and the status
    ``skipped (finished before)``, and a line says so. True when ``p`` was finished (every launcher asks this)."""
    from odise_pl.engine.run_dirs import finished_version

    done = finished_version(p.run_parent)
    if done is None:
        return False
    p.run_dir, p.results = done
    p.status = "skipped (finished before)"
    return True


def fit_planned(p: PlannedRun, *, callbacks: list | None = None, plugins: list | None = None) -> str:
    """Train one run to its end (skip it when finished, resume it when interrupted); returns its message.

    Sets ``p.status`` (``done`` or ``skipped (finished before)``), ``p.run_dir`` and ``p.results``.
    Raises what ``fit`` raises.
    """
    from odise_pl.engine.fit import fit
    from odise_pl.engine.run_dirs import resume_checkpoint

    if skip_if_finished(p):
        return f"finished before ({p.run_dir}), skipped"
    ckpt = resume_checkpoint(p.run_parent)
    p.results = fit(p.cfg, ckpt_path=str(ckpt) if ckpt else None, callbacks=callbacks, plugins=plugins)
    p.run_dir, p.status = str(p.results["run_dir"]), "done"
    return f"done ({p.run_dir})"


def run_inline(planned: list[PlannedRun], settings=None) -> int:
    """Run every pending run in order (skipping finished ones); returns the number of failed runs."""
    from odise_pl.engine.run_dirs import finished_version, resume_checkpoint
    from odise_pl.sweeps.run_state import clear_failed, mark_failed
    from odise_pl.sweeps.summary import write_sweep_summary

    failed = 0
    for index, p in enumerate(planned, 1):
        prefix = f"[{index}/{len(planned)}] {p.run.name}"
        if finished_version(p.run_parent) is not None:
            print(f"{prefix}: {fit_planned(p)}")
            continue
        ckpt = resume_checkpoint(p.run_parent)
        clear_failed(p.run_parent)
        print(prefix + (f": resuming from {ckpt}" if ckpt else ""), flush=True)
        try:
            fit_planned(p)
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the sweep
            failed += 1
            p.status = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            traceback.print_exc(file=sys.stderr)
            mark_failed(p.run_parent, p.status.removeprefix("failed: "))
            print(f"run {p.run.name} failed; the sweep goes on. Re-run the sweep to retry it.", file=sys.stderr)
        finally:
            write_sweep_summary(planned)
    return failed
