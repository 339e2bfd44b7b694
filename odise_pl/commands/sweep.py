"""``odise-pl sweep -c SWEEP.yaml [--dry-run] [--seeds 0,1,2] [--launcher inline|local|slurm] [key=value ...]``:
every run of a sweep file; ``odise-pl sweep status -c SWEEP.yaml``: where each run stands;
``odise-pl sweep collect -c SWEEP.yaml|SWEEP_DIR``: the summary rebuilt from the run directories at any
time; ``odise-pl sweep plot -c SWEEP.yaml|SWEEP_DIR [--out DIR]``: its figures
(:mod:`odise_pl.launchers.collect`, :mod:`odise_pl.launchers.plot`).

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

Where the runs execute is the launcher's business (:mod:`odise_pl.launchers`): ``inline`` (default, one
after another in this process), ``local`` (``--max-parallel K`` processes on disjoint GPUs) or ``slurm``
(one job per run through submitit); set it with ``--launcher`` or the sweep file's ``launcher`` section.
Further sub-commands (``status``, ...) are one line each in :data:`SUBCOMMANDS`.

Example:
    $ odise-pl sweep -c experiments/sweeps/backbones_tiny.yaml --dry-run
    odise-pl fit -c experiments/quickstart.yaml ... 'model.backbone={name: mae, pretrained: null}' ...
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from odise_pl.errors import ConfigError

if TYPE_CHECKING:  # imported when the command runs (the CLI starts light: tests/core/test_cli_imports.py)
    from odise_pl.config.sweep import SweepRun


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
    from omegaconf import OmegaConf, read_write

    from odise_pl.config import load_config
    from odise_pl.config.sweep import expand_sweep, format_value

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


def finished_results(run_parent: Path) -> tuple[str, dict] | None:
    """``(run_dir, results)`` of a finished version of a run, or None (:func:`odise_pl.launchers.collect.finished_results`)."""
    from odise_pl.launchers.collect import finished_results as finished

    return finished(run_parent)


def resume_checkpoint(run_parent: Path) -> Path | None:
    """The newest ``last.ckpt`` of an unfinished version of a run (None: start afresh)."""
    found = sorted(run_parent.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def write_summary(planned: list[PlannedRun]) -> Path | None:
    """``summary.md`` and ``summary.csv`` in the sweep directory, read from the run directories
    (:func:`odise_pl.launchers.collect.write_summary`); returns the Markdown file."""
    from odise_pl.launchers import collect

    if not planned:
        return None
    sweep_dir = planned[0].sweep_dir
    records = [collect.read_run(sweep_dir, entry) for entry in collect.entries_of(planned)]
    notes = {p.run.name: p.status for p in planned if p.status != "pending"}
    return collect.write_summary(sweep_dir, records, notes)


def run_sweep(planned: list[PlannedRun]) -> int:
    """Run every pending run in order, in this process (the ``inline`` launcher); returns the number failed."""
    from odise_pl.launchers.inline import run_inline

    return run_inline(planned)


def check_sweep_file(path: str) -> None:
    """Refuse a folder, or an experiment file given where a sweep file is expected (before anything else).

    Raises:
        ConfigError: ``path`` is not a sweep file (names it and says what one looks like).
    """
    from odise_pl.config.yaml_source import read_yaml

    data, _ = read_yaml(Path(path))  # a missing file or a folder is named here
    if not isinstance(data, dict) or "base" not in data:
        raise ConfigError(f"{path} is not a sweep file: a sweep file names its experiment ('base: ../X.yaml') and "
                          "the keys it varies ('grid:' and/or 'zip:'); see experiments/sweeps/.")


def launcher_flags(args: argparse.Namespace) -> dict:
    """The launcher settings given on the command line (None: not given)."""
    return {"name": args.launcher, "max_parallel": args.max_parallel, "partition": args.partition,
            "account": args.account, "qos": args.qos, "nodes": args.nodes, "gpus_per_node": args.gpus_per_node,
            "cpus_per_task": args.cpus_per_task, "mem": args.mem, "time": args.time, "wait": args.wait or None}


def cmd_sweep(args: argparse.Namespace) -> int:
    from odise_pl.launchers import launch, launcher_settings

    check_sweep_file(args.config)
    from odise_pl.config.sweep import parse_seeds
    from odise_pl.launchers import collect

    settings = launcher_settings(args.config, launcher_flags(args))
    seeds = parse_seeds(args.seeds) if getattr(args, "seeds", None) is not None else None
    planned = plan(args.config, [*args.overrides, *settings.trainer_overrides()], seeds=seeds)
    if args.dry_run:
        for p in planned:
            print(fit_command(p))
        return 0
    if planned:  # what `collect` reads: the planned runs, before any of them starts
        collect.write_plan(planned[0].sweep_dir, collect.entries_of(planned), str(args.config))
    failed = launch(planned, settings)
    table = write_summary(planned)
    if table is not None and not (settings.name == "slurm" and not settings.wait):
        print("\n" + table.read_text())
        print(f"sweep directory: {planned[0].sweep_dir}  (tensorboard --logdir {planned[0].sweep_dir})")
    if failed:
        print(f"odise-pl: {failed} of {len(planned)} runs failed (see above)", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from odise_pl.launchers.status import format_states, run_states

    check_sweep_file(args.config)
    planned = plan(args.config, list(args.overrides))
    print(f"sweep {planned[0].run.sweep if planned else args.config}: {planned[0].sweep_dir if planned else ''}")
    print(format_states(run_states(planned)))
    return 0


def seeds_argument(p: argparse.ArgumentParser) -> None:
    """``--seeds`` of ``collect`` / ``plot``: the seeds the sweep ran with."""
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="the seeds the sweep ran with (default: the sweep file's, or those it recorded)")


def plot_arguments(p: argparse.ArgumentParser) -> None:
    seeds_argument(p)
    p.add_argument("--out", default=None, metavar="DIR", help="where the PNGs go (default SWEEP_DIR/plots)")


#: ``odise-pl sweep NAME -c SWEEP.yaml [key=value ...]``: NAME -> (help, "module:function", its extra
#: arguments or None). The function takes the parsed arguments (``config``, ``overrides`` and the extra
#: ones) and returns the exit code; its module is imported only when it runs (the CLI starts light).
#: Adding a sub-command is one line here.
SUBCOMMANDS: dict[str, tuple] = {
    "status": ("each run's state: pending, running, done, failed (with its log's tail)",
               "odise_pl.commands.sweep:cmd_status", None),
    "collect": ("the summary (summary.md / .csv, mean, std and 95% CI over seeds, HPARAMS view) rebuilt from the "
                "run directories; -c takes the sweep file or its directory",
                "odise_pl.launchers.collect:collect_command", seeds_argument),
    "plot": ("PNGs of the final metrics (seed error bars) and the validation curves; --out DIR",
             "odise_pl.launchers.plot:plot_command", plot_arguments),
}

RUN = "run"  # the hidden sub-command of `odise-pl sweep -c S.yaml [key=value ...]`


class OptionalSubcommand(argparse.Action):
    """Sub-commands that may be left out: a first positional that names none starts the ``run`` form
    (``odise-pl sweep -c S.yaml key=value``), so the overrides still come after the options."""

    def __init__(self, option_strings, dest, *, parsers: dict, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=argparse.REMAINDER, **kwargs)
        self.parsers = parsers

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if not values:  # `odise-pl sweep -c S.yaml [options]`
            return
        name, rest = (values[0], values[1:]) if values[0] in self.parsers else (RUN, values)
        setattr(namespace, self.dest, name)
        sub_args, extra = self.parsers[name].parse_known_args(rest, None)
        for key, value in vars(sub_args).items():
            setattr(namespace, key, value)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")


def add_run_arguments(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The options of the run form; ``suppress``: on its hidden sub-parser (keeps what came before)."""
    default = {"default": argparse.SUPPRESS} if suppress else {}
    from odise_pl.launchers import LAUNCHER_NAMES

    p.add_argument("--dry-run", action="store_true", **default,
                   help="print one `odise-pl fit` command per run, run nothing")
    p.add_argument("--seeds", metavar="0,1,2", **default,
                   help="run every point once per seed (the runs get seed=N and the name suffix /seed=N); "
                        "replaces the sweep file's seeds")
    group = p.add_argument_group("launcher (default: the sweep file's 'launcher' section, else inline)")
    group.add_argument("--launcher", choices=LAUNCHER_NAMES, **default,
                       help="inline: one run after another here; local: --max-parallel runs at once on this "
                            "machine, on disjoint GPUs; slurm: one SLURM job per run (submitit)")
    group.add_argument("--max-parallel", type=int, metavar="K", **default, help="local: runs at once")
    group.add_argument("--wait", action="store_true", **default, help="slurm: wait until every job has ended")
    for flag, kind, text in (("--partition", str, "SLURM partition"), ("--account", str, "SLURM account"),
                             ("--qos", str, "SLURM quality of service"),
                             ("--nodes", int, "nodes per job (-> trainer.num_nodes)"),
                             ("--gpus-per-node", int, "GPUs per node, one task each (-> trainer.devices)"),
                             ("--cpus-per-task", int, "CPUs per task"), ("--mem", str, "memory per node, e.g. 64G"),
                             ("--time", int, "time limit per job, minutes")):
        group.add_argument(flag, type=kind, **default, help=text)


def add_common_arguments(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    default = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("-c", "--config", **default,
                   help="sweep YAML file, e.g. experiments/sweeps/backbones.yaml")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run, e.g. trainer.max_steps=100")


def dispatch(args: argparse.Namespace) -> int:
    name = getattr(args, "sweep_command", None) or RUN
    if getattr(args, "config", None) is None:
        raise ConfigError(f"odise-pl sweep{'' if name == RUN else ' ' + name} needs -c SWEEP.yaml, e.g. "
                          "-c experiments/sweeps/backbones_tiny.yaml.")
    if name == RUN:
        return cmd_sweep(args)
    module, function = SUBCOMMANDS[name][1].split(":")
    return int(getattr(importlib.import_module(module), function)(args) or 0)


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run every run of a sweep file (inline, local or slurm); sweep status|...",
                       description="odise-pl sweep -c S.yaml [options] [key=value ...] runs the sweep; "
                       f"odise-pl sweep {{{','.join(SUBCOMMANDS)}}} -c S.yaml [key=value ...] "
                       + "; ".join(f"{name}: {text}" for name, (text, _, _) in SUBCOMMANDS.items()))
    p.add_argument("-c", "--config", default=None, help="sweep YAML file, e.g. experiments/sweeps/backbones.yaml")
    add_run_arguments(p)
    parsers = {}
    run = argparse.ArgumentParser(prog="odise-pl sweep", add_help=False)
    add_common_arguments(run, suppress=True)
    add_run_arguments(run, suppress=True)
    parsers[RUN] = run
    for name, (text, _, extra) in SUBCOMMANDS.items():
        sp = argparse.ArgumentParser(prog=f"odise-pl sweep {name}", description=text)
        add_common_arguments(sp, suppress=True)
        if extra is not None:
            extra(sp)
        parsers[name] = sp
    p.add_argument("sweep_command", action=OptionalSubcommand, parsers=parsers, metavar="[status|key=value ...]",
                   help="a sub-command (" + ", ".join(SUBCOMMANDS) + "), or the overrides of every run")
    p.set_defaults(func=dispatch, overrides=[])
