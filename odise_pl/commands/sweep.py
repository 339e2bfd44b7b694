"""``odise-pl sweep -c SWEEP.yaml [--dry-run] [--seeds 0,1,2] [key=value ...]``: every run of a sweep file.

``odise-pl sweep collect -c SWEEP.yaml|SWEEP_DIR`` rebuilds the summary from the run directories at any
time; ``odise-pl sweep plot -c SWEEP.yaml|SWEEP_DIR [--out DIR]`` draws it (:mod:`odise_pl.launchers.collect`,
:mod:`odise_pl.launchers.plot`).

The sweep file (:mod:`odise_pl.config.sweep`) names a base experiment and the dotted keys
to vary (``grid``: every combination, ``zip``: lists taken together).  Run ``NAME`` (made
from the values it varies, e.g. ``backbone=mae``) trains in ``ROOT/SWEEP/NAME/version_N``,
where ``ROOT`` is the experiment's ``run.root``; so ``tensorboard --logdir ROOT/SWEEP`` shows
the runs by name, with one row each in the HPARAMS view.  After every run the sweep
directory gets ``summary.md`` and ``summary.csv``: the varied values, parameter counts and
final metrics of every run.  With seeds (``seeds:`` in the file, or ``--seeds``) every point runs
once per seed (``backbone=mae/seed=0``) and the summary adds mean, std and 95% CI per point.

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
import importlib
import shlex
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf, read_write

from odise_pl.config import load_config
from odise_pl.config.sweep import SweepRun, expand_sweep, format_value, parse_seeds
from odise_pl.errors import ConfigError
from odise_pl.launchers import collect
from odise_pl.launchers.collect import METRICS, PARAMS, finished_results  # noqa: F401 (public here too)


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


def plan(path: str | Path, cli_overrides: list[str], *, seeds: list[int] | None = None) -> list[PlannedRun]:
    """Expand the sweep and resolve every run's config (``run.root``/``run.name`` set per run).

    ``seeds`` (``--seeds``) replicates every point once per seed, replacing the file's ``seeds``.

    Raises:
        ConfigError: a malformed sweep, an invalid run, or a command-line override of a varied key.
    """
    runs = expand_sweep(path, validate=False, seeds=seeds)  # each run's config is loaded (validated) below
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


def resume_checkpoint(run_parent: Path) -> Path | None:
    """The newest ``last.ckpt`` of an unfinished version of a run (None: start afresh)."""
    found = sorted(run_parent.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def write_summary(planned: list[PlannedRun]) -> Path | None:
    """``summary.md`` and ``summary.csv`` in the sweep directory, read from the run directories
    (:func:`odise_pl.launchers.collect.write_summary`); returns the Markdown file."""
    if not planned:
        return None
    sweep_dir = planned[0].sweep_dir
    records = [collect.read_run(sweep_dir, entry) for entry in collect.entries_of(planned)]
    notes = {p.run.name: p.status for p in planned if p.status != "pending"}
    return collect.write_summary(sweep_dir, records, notes)


def run_sweep(planned: list[PlannedRun]) -> int:
    """Run every pending run in order (skipping finished ones); returns the number of failed runs."""
    from odise_pl.engine.fit import fit

    failed = 0
    for index, p in enumerate(planned, 1):
        done = finished_results(p.run_parent)
        if done is not None:
            p.run_dir, p.results = done
            p.status = "skipped (finished before)"
            print(f"[{index}/{len(planned)}] {p.run.name}: finished before ({p.run_dir}), skipped")
            continue
        ckpt = resume_checkpoint(p.run_parent)
        collect.clear_failed(p.run_parent)
        print(f"[{index}/{len(planned)}] {p.run.name}" + (f": resuming from {ckpt}" if ckpt else ""), flush=True)
        try:
            p.results = fit(p.cfg, ckpt_path=str(ckpt) if ckpt else None)
            p.run_dir, p.status = str(p.results["run_dir"]), "done"
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the sweep
            failed += 1
            p.status = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            traceback.print_exc(file=sys.stderr)
            collect.mark_failed(p.run_parent, p.status.removeprefix("failed: "))
            print(f"run {p.run.name} failed; the sweep goes on. Re-run the sweep to retry it.", file=sys.stderr)
        finally:
            write_summary(planned)
    return failed


def cmd_sweep(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if overrides and overrides[0] in ACTIONS:  # odise-pl sweep collect|plot -c ...
        module, function = ACTIONS[overrides[0]].split(":")
        args.overrides = overrides[1:]
        return int(getattr(importlib.import_module(module), function)(args) or 0)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if args.out is not None:
        raise ConfigError("--out is for `odise-pl sweep plot` (where the PNGs go).")
    planned = plan(args.config, overrides, seeds=seeds)
    if args.dry_run:
        for p in planned:
            print(fit_command(p))
        return 0
    if planned:
        collect.write_plan(planned[0].sweep_dir, collect.entries_of(planned), str(args.config))
    failed = run_sweep(planned)
    table = write_summary(planned)
    if table is not None:
        print("\n" + table.read_text())
        print(f"sweep directory: {planned[0].sweep_dir}  (tensorboard --logdir {planned[0].sweep_dir})")
    if failed:
        print(f"odise-pl: {failed} of {len(planned)} runs failed (see above)", file=sys.stderr)
        return 1
    return 0


#: ``odise-pl sweep ACTION -c ...``: the first positional word picks the action; each takes the parsed
#: arguments (``config``, ``overrides`` after the word, ``seeds``, ``out``) and returns the exit code
ACTIONS = {"collect": "odise_pl.launchers.collect:collect_command",
           "plot": "odise_pl.launchers.plot:plot_command"}


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run every run of a sweep file, one after another; "
                       "`sweep collect|plot -c S.yaml`: its summary / plots, from the run directories",
                       usage="odise-pl sweep [collect|plot] -c SWEEP [--dry-run] [--seeds 0,1,2] [--out DIR] "
                             "[key=value ...]")
    p.add_argument("-c", "--config", required=True,
                   help="sweep YAML file, e.g. experiments/sweeps/backbones.yaml "
                        "(collect / plot: also a sweep directory, e.g. runs/sweeps/backbones_tiny)")
    p.add_argument("--dry-run", action="store_true", help="print one `odise-pl fit` command per run, run nothing")
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="run every point once per seed (the runs get seed=N and the name suffix /seed=N); "
                        "replaces the sweep file's seeds")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="plot: where the PNGs go (default SWEEP_DIR/plots)")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run, e.g. trainer.max_steps=100; "
                   "first `collect` or `plot` for those actions (then key=value before -c)")
    p.set_defaults(func=cmd_sweep)
