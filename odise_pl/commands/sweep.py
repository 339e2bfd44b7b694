"""``odise-pl sweep -c SWEEP.yaml [--dry-run] [--seeds 0,1,2] [--launcher inline|local|slurm] [key=value ...]``:
every run of a sweep file; ``odise-pl sweep status -c SWEEP.yaml``: where each run stands;
``odise-pl sweep collect -c SWEEP.yaml|SWEEP_DIR``: the summary rebuilt from the run directories at any
time; ``odise-pl sweep plot -c SWEEP.yaml|SWEEP_DIR [--out DIR]``: its figures
(the library: :mod:`odise_pl.sweeps`).

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
import sys

from odise_pl.errors import ConfigError

# the library (odise_pl.sweeps, odise_pl.launchers) is imported when a command runs: the CLI starts light
# (tests/core/test_cli_imports.py)


def launcher_flags(args: argparse.Namespace) -> dict:
    """The launcher settings given on the command line (None: not given)."""
    return {
        "name": args.launcher,
        "max_parallel": args.max_parallel,
        "partition": args.partition,
        "account": args.account,
        "qos": args.qos,
        "nodes": args.nodes,
        "gpus_per_node": args.gpus_per_node,
        "cpus_per_task": args.cpus_per_task,
        "mem": args.mem,
        "time": args.time,
        "wait": args.wait or None,
    }


def cmd_sweep(args: argparse.Namespace) -> int:
    from odise_pl.launchers import launch, launcher_settings
    from odise_pl.sweeps.plan import check_sweep_file, fit_command, plan

    check_sweep_file(args.config)
    from odise_pl.config.sweep import parse_seeds
    from odise_pl.sweeps.plan_file import entries_of, write_plan
    from odise_pl.sweeps.summary import write_sweep_summary

    settings = launcher_settings(args.config, launcher_flags(args))
    seeds = parse_seeds(args.seeds) if getattr(args, "seeds", None) is not None else None
    planned = plan(args.config, [*args.overrides, *settings.trainer_overrides()], seeds=seeds)
    if args.dry_run:
        for p in planned:
            print(fit_command(p))
        return 0
    if planned:  # what `collect` reads: the planned runs, before any of them starts
        write_plan(planned[0].sweep_dir, entries_of(planned), str(args.config))
    failed = launch(planned, settings)
    table = write_sweep_summary(planned)
    if table is not None and not (settings.name == "slurm" and not settings.wait):
        print("\n" + table.read_text())
        print(f"sweep directory: {planned[0].sweep_dir}  (tensorboard --logdir {planned[0].sweep_dir})")
    if failed:
        print(f"odise-pl: {failed} of {len(planned)} runs failed (see above)", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from odise_pl.launchers.status import format_states, run_states
    from odise_pl.sweeps.plan import check_sweep_file, plan

    check_sweep_file(args.config)
    planned = plan(args.config, list(args.overrides))
    print(f"sweep {planned[0].run.sweep if planned else args.config}: {planned[0].sweep_dir if planned else ''}")
    print(format_states(run_states(planned)))
    return 0


def _seeds(args: argparse.Namespace) -> list[int] | None:
    from odise_pl.config.sweep import parse_seeds

    return parse_seeds(args.seeds) if getattr(args, "seeds", None) is not None else None


def cmd_collect(args: argparse.Namespace) -> int:
    """``odise-pl sweep collect -c SWEEP.yaml|SWEEP_DIR [--seeds ...]``: prints the summary."""
    from odise_pl.sweeps.collect import collect
    from odise_pl.sweeps.plan_file import HPARAMS_DIR
    from odise_pl.sweeps.summary import state_counts

    sweep_dir, records = collect(args.config, list(getattr(args, "overrides", []) or []), _seeds(args))
    print((sweep_dir / "summary.md").read_text())
    print(f"sweep directory: {sweep_dir}  ({state_counts(records)}; HPARAMS view: tensorboard --logdir {sweep_dir / HPARAMS_DIR})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``odise-pl sweep plot -c SWEEP.yaml|SWEEP_DIR [--out DIR] [--seeds ...]``: prints the PNGs written."""
    from odise_pl.sweeps.plot import plot_sweep

    for path in plot_sweep(args.config, list(getattr(args, "overrides", []) or []), _seeds(args), out=getattr(args, "out", None)):
        print(path)
    return 0


def seeds_argument(p: argparse.ArgumentParser) -> None:
    """``--seeds`` of ``collect`` / ``plot``: the seeds the sweep ran with."""
    p.add_argument(
        "--seeds", default=None, metavar="0,1,2", help="the seeds the sweep ran with (default: the sweep file's, or those it recorded)"
    )


def plot_arguments(p: argparse.ArgumentParser) -> None:
    seeds_argument(p)
    p.add_argument("--out", default=None, metavar="DIR", help="where the PNGs go (default SWEEP_DIR/plots)")


#: ``odise-pl sweep NAME -c SWEEP.yaml [key=value ...]``: NAME -> (help, handler, its extra arguments or
#: None). The handler takes the parsed arguments (``config``, ``overrides`` and the extra ones) and returns
#: the exit code; it imports the library when it runs (the CLI starts light). Adding a sub-command is one
#: line here.
SUBCOMMANDS: dict[str, tuple] = {
    "status": ("each run's state: pending, running, done, failed (with its log's tail)", cmd_status, None),
    "collect": (
        "the summary (summary.md / .csv, mean, std and 95% CI over seeds, HPARAMS view) rebuilt from the "
        "run directories; -c takes the sweep file or its directory",
        cmd_collect,
        seeds_argument,
    ),
    "plot": ("PNGs of the final metrics (seed error bars) and the validation curves; --out DIR", cmd_plot, plot_arguments),
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

    p.add_argument("--dry-run", action="store_true", **default, help="print one `odise-pl fit` command per run, run nothing")
    p.add_argument(
        "--seeds",
        metavar="0,1,2",
        **default,
        help="run every point once per seed (the runs get seed=N and the name suffix /seed=N); replaces the sweep file's seeds",
    )
    group = p.add_argument_group("launcher (default: the sweep file's 'launcher' section, else inline)")
    group.add_argument(
        "--launcher",
        choices=LAUNCHER_NAMES,
        **default,
        help="inline: one run after another here; local: --max-parallel runs at once on this "
        "machine, on disjoint GPUs; slurm: one SLURM job per run (submitit)",
    )
    group.add_argument("--max-parallel", type=int, metavar="K", **default, help="local: runs at once")
    group.add_argument("--wait", action="store_true", **default, help="slurm: wait until every job has ended")
    for flag, kind, text in (
        ("--partition", str, "SLURM partition"),
        ("--account", str, "SLURM account"),
        ("--qos", str, "SLURM quality of service"),
        ("--nodes", int, "nodes per job (-> trainer.num_nodes)"),
        ("--gpus-per-node", int, "GPUs per node, one task each (-> trainer.devices)"),
        ("--cpus-per-task", int, "CPUs per task"),
        ("--mem", str, "memory per node, e.g. 64G"),
        ("--time", int, "time limit per job, minutes"),
    ):
        group.add_argument(flag, type=kind, **default, help=text)


def add_common_arguments(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    default = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("-c", "--config", **default, help="sweep YAML file, e.g. experiments/sweeps/backbones.yaml")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run, e.g. trainer.max_steps=100")


def run(args: argparse.Namespace) -> int:
    """``odise-pl sweep [NAME]``: the run form, or the sub-command NAME of :data:`SUBCOMMANDS`."""
    name = getattr(args, "sweep_command", None) or RUN
    if getattr(args, "config", None) is None:
        raise ConfigError(
            f"odise-pl sweep{'' if name == RUN else ' ' + name} needs -c SWEEP.yaml, e.g. -c experiments/sweeps/backbones_tiny.yaml."
        )
    if name == RUN:
        return cmd_sweep(args)
    return int(SUBCOMMANDS[name][1](args) or 0)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run every run of a sweep file (inline, local or slurm); sweep status|...",
        description="odise-pl sweep -c S.yaml [options] [key=value ...] runs the sweep; "
        f"odise-pl sweep {{{','.join(SUBCOMMANDS)}}} -c S.yaml [key=value ...] "
        + "; ".join(f"{name}: {text}" for name, (text, _, _) in SUBCOMMANDS.items()),
    )
    p.add_argument("-c", "--config", default=None, help="sweep YAML file, e.g. experiments/sweeps/backbones.yaml")
    add_run_arguments(p)
    parsers = {}
    run_form = argparse.ArgumentParser(prog="odise-pl sweep", add_help=False)
    add_common_arguments(run_form, suppress=True)
    add_run_arguments(run_form, suppress=True)
    parsers[RUN] = run_form
    for name, (text, _, extra) in SUBCOMMANDS.items():
        sp = argparse.ArgumentParser(prog=f"odise-pl sweep {name}", description=text)
        add_common_arguments(sp, suppress=True)
        if extra is not None:
            extra(sp)
        parsers[name] = sp
    p.add_argument(
        "sweep_command",
        action=OptionalSubcommand,
        parsers=parsers,
        metavar="[status|key=value ...]",
        help="a sub-command (" + ", ".join(SUBCOMMANDS) + "), or the overrides of every run",
    )
    p.set_defaults(func=run, overrides=[])
