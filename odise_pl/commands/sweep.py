"""``odise-pl sweep -c SWEEP.yaml [--dry-run] [key=value ...]``: every run of a sweep file, one after another.

The sweep file (:mod:`odise_pl.config.sweep`) names a base experiment and the dotted keys
to vary (``grid``: every combination, ``zip``: lists taken together).  Run ``NAME`` (made
from the values it varies, e.g. ``backbone=mae``) trains in ``ROOT/SWEEP/NAME/version_N``,
where ``ROOT`` is the experiment's ``run.root``; so ``tensorboard --logdir ROOT/SWEEP`` shows
the runs by name, with one row each in the HPARAMS view.  After every run the sweep
directory gets ``summary.md`` and ``summary.csv``: the varied values, parameter counts and
final metrics of every run.

Re-running a sweep skips its finished runs (a ``metrics*.json`` with final metrics); an
unfinished run with a ``last.ckpt`` resumes from it; a failed run is reported and the sweep
goes on with the next one.  ``key=value`` arguments apply to every run (after the sweep's
own ``overrides``, before the varied values, which they may not set).

Example:
    $ odise-pl sweep -c experiments/sweeps/backbones_tiny.yaml --dry-run
    odise-pl fit -c experiments/quickstart.yaml ... 'model.backbone={name: mae, pretrained: null}' ...
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from odise_pl.errors import ConfigError

if TYPE_CHECKING:  # imported when the command runs (the CLI starts light)
    from odise_pl.config.sweep import SweepRun

METRICS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU")
PARAMS = ("backbone", "backbone_weights", "params_trainable_M", "params_frozen_M", "backbone_frozen_M")


@dataclass
class PlannedRun:
    """A sweep run with its full overrides, resolved config and directories."""

    run: SweepRun
    overrides: list[str]
    cfg: object
    sweep_dir: Path
    status: str = "pending"            # pending | done | skipped (finished before) | failed: ...
    run_dir: str = ""
    results: dict = field(default_factory=dict)

    @property
    def run_parent(self) -> Path:
        return self.sweep_dir / self.run.name


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def plan(path: str | Path, cli_overrides: list[str]) -> list[PlannedRun]:
    """Expand the sweep and resolve every run's config (``run.root``/``run.name`` set per run).

    Raises:
        ConfigError: a malformed sweep, an invalid run, or a command-line override of a varied key.
    """
    from omegaconf import OmegaConf, read_write

    from odise_pl.config import load_config
    from odise_pl.config.sweep import expand_sweep, format_value

    runs = expand_sweep(path, validate=False)  # each run's config is loaded (validated) below
    planned = []
    for index, run in enumerate(runs, 1):
        varied_keys = set(run.values)
        clash = [o for o in cli_overrides if _key(o) in varied_keys]
        if clash:
            raise ConfigError(f"override {clash[0]!r} sets '{_key(clash[0])}', which the sweep {path} varies; "
                              "drop it, or change the sweep file's grid/zip.")
        split = len(run.overrides) - len(run.values)   # SweepRun.overrides = [*sweep overrides, *varied]
        common, varied = run.overrides[:split], run.overrides[split:]
        overrides = [*common, *cli_overrides, *varied]
        try:
            cfg = load_config(run.base, overrides)
        except ConfigError as err:
            raise ConfigError(f"sweep {path}: run '{run.name}' ({index}/{len(runs)}): {err}") from err
        sweep_dir = Path(str(cfg.run.root)) / run.sweep
        placement = {"run.root": str(sweep_dir), "run.name": run.name, "run.version": None}
        with read_write(cfg):  # the loaded config is read-only
            for key, value in placement.items():
                OmegaConf.update(cfg, key, value, merge=False)
        overrides += [f"{key}={format_value(value)}" for key, value in placement.items()]
        planned.append(PlannedRun(run, overrides, cfg, sweep_dir))
    return planned


def fit_command(p: PlannedRun) -> str:
    """The ``odise-pl fit`` command line of one run (shell-quoted)."""
    return " ".join(["odise-pl", "fit", "-c", shlex.quote(str(p.run.base)), *map(shlex.quote, p.overrides)])


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


def resume_checkpoint(run_parent: Path) -> Path | None:
    """The newest ``last.ckpt`` of an unfinished version of a run (None: start afresh)."""
    found = sorted(run_parent.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def summary_rows(planned: list[PlannedRun]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep summary: run, varied values, parameters, final metrics, status."""
    from odise_pl.config.sweep import _labels, _shown

    labels = _labels(list(planned[0].run.values)) if planned else {}
    params = [k for k in PARAMS if k not in labels.values()]  # e.g. 'backbone' when the sweep varies it
    header = ["run", *labels.values(), *params, *METRICS, "status", "run_dir"]
    rows = []
    for p in planned:
        hparams = {}
        if p.run_dir and (Path(p.run_dir) / "hparams.json").is_file():
            hparams = json.loads((Path(p.run_dir) / "hparams.json").read_text())
        final = p.results.get("final", {})
        rows.append([p.run.name, *(_shown(p.run.values[k]) for k in labels),
                     *(str(hparams.get(k, "")) for k in params),
                     *(f"{final[m]:.2f}" if m in final else "" for m in METRICS), p.status, p.run_dir])
    return header, rows


def write_summary(planned: list[PlannedRun]) -> Path | None:
    """``summary.md`` and ``summary.csv`` in the sweep directory; returns the Markdown file."""
    if not planned:
        return None
    header, rows = summary_rows(planned)
    out = planned[0].sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    (out / "summary.csv").write_text(buffer.getvalue())
    return out / "summary.md"


def run_sweep(planned: list[PlannedRun]) -> int:
    """Run every pending run in order (skipping finished ones); returns the number of failed runs."""
    from odise_pl.runner import fit

    failed = 0
    for index, p in enumerate(planned, 1):
        done = finished_results(p.run_parent)
        if done is not None:
            p.run_dir, p.results = done
            p.status = "skipped (finished before)"
            print(f"[{index}/{len(planned)}] {p.run.name}: finished before ({p.run_dir}), skipped")
            continue
        ckpt = resume_checkpoint(p.run_parent)
        print(f"[{index}/{len(planned)}] {p.run.name}" + (f": resuming from {ckpt}" if ckpt else ""), flush=True)
        try:
            p.results = fit(p.cfg, ckpt_path=str(ckpt) if ckpt else None)
            p.run_dir, p.status = str(p.results["run_dir"]), "done"
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the sweep
            failed += 1
            p.status = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            traceback.print_exc(file=sys.stderr)
            print(f"run {p.run.name} failed; the sweep goes on. Re-run the sweep to retry it.", file=sys.stderr)
        finally:
            write_summary(planned)
    return failed


def cmd_sweep(args: argparse.Namespace) -> int:
    planned = plan(args.config, list(args.overrides))
    if args.dry_run:
        for p in planned:
            print(fit_command(p))
        return 0
    failed = run_sweep(planned)
    table = write_summary(planned)
    if table is not None:
        print("\n" + table.read_text())
        print(f"sweep directory: {planned[0].sweep_dir}  (tensorboard --logdir {planned[0].sweep_dir})")
    if failed:
        print(f"odise-pl: {failed} of {len(planned)} runs failed (see above)", file=sys.stderr)
        return 1
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run every run of a sweep file, one after another")
    p.add_argument("-c", "--config", required=True, help="sweep YAML file, e.g. experiments/sweeps/backbones.yaml")
    p.add_argument("--dry-run", action="store_true", help="print one `odise-pl fit` command per run, run nothing")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run, e.g. trainer.max_steps=100")
    p.set_defaults(func=cmd_sweep)
