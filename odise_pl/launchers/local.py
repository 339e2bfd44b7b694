"""The ``local`` launcher: ``--max-parallel K`` runs at once on this machine, each on its own GPUs.

Every run is its own process, ``python -m odise_pl.cli fit -c BASE OVERRIDES [--resume last.ckpt]``,
writing its output to ``SWEEP_DIR/NAME/fit.log`` (``fit.1.log``, ... for later launches). With N visible
GPUs, each of the K slots owns N // K of them (``CUDA_VISIBLE_DEVICES``; ``trainer.devices`` set to that
number); without GPUs the K processes run side by side on the CPU. A run that fails is reported (the tail
of its log) and the sweep goes on with the next one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from odise_pl.errors import ConfigError
from odise_pl.launchers.records import write_record

if TYPE_CHECKING:
    from odise_pl.launchers.settings import LauncherSettings
    from odise_pl.sweeps.plan import PlannedRun

POLL_S = 0.2
#: the last line the launcher appends to a run's log when its process has ended
ENDED = "odise-pl local launcher: the run's process ended with exit code "


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: list[str], max_parallel: int) -> list[list[str]]:
    """``max_parallel`` disjoint sets of GPUs (empty sets on a machine without GPUs).

    Raises:
        ConfigError: fewer GPUs than runs at once.
    """
    if not gpus:
        return [[] for _ in range(max_parallel)]
    if len(gpus) < max_parallel:
        raise ConfigError(
            f"--max-parallel {max_parallel} needs at least {max_parallel} GPUs, but this machine has "
            f"{len(gpus)} ({','.join(gpus)}); lower --max-parallel."
        )
    per_run = len(gpus) // max_parallel
    return [gpus[i * per_run : (i + 1) * per_run] for i in range(max_parallel)]


def log_path(run_parent: Path) -> Path:
    """The next free ``fit.log`` / ``fit.N.log`` of a run (earlier launches' logs are kept)."""
    path, n = run_parent / "fit.log", 0
    while path.exists():
        n += 1
        path = run_parent / f"fit.{n}.log"
    return path


def fit_argv(p: PlannedRun, gpus: list[str]) -> list[str]:
    """The ``python -m odise_pl.cli fit`` command of one run (resuming its newest ``last.ckpt``)."""
    from odise_pl.engine.run_dirs import resume_checkpoint

    argv = [sys.executable, "-m", "odise_pl.cli", "fit", "-c", str(p.run.base), *p.overrides]
    if gpus:
        argv.append(f"trainer.devices={len(gpus)}")
    ckpt = resume_checkpoint(p.run_parent)
    return argv + (["--resume", str(ckpt)] if ckpt is not None else [])


def log_tail(path: Path | str | None, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_local(planned: list[PlannedRun], settings: LauncherSettings) -> int:
    """Run the pending runs ``settings.max_parallel`` at a time; returns the number of failed runs."""
    from odise_pl.engine.run_dirs import finished_version
    from odise_pl.launchers.inline import skip_if_finished
    from odise_pl.sweeps.run_state import clear_failed, mark_failed
    from odise_pl.sweeps.summary import write_sweep_summary

    slots = gpu_slots(visible_gpus(), settings.max_parallel)
    pending = []
    for p in planned:
        if skip_if_finished(p):
            print(f"{p.run.name}: finished before ({p.run_dir}), skipped")
        else:
            p.run_parent.mkdir(parents=True, exist_ok=True)
            pending.append((p, log_path(p.run_parent)))
    if not pending:
        return 0
    write_record(
        planned[0].sweep_dir,
        {
            "launcher": "local",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "runs": [{"name": p.run.name, "run_parent": str(p.run_parent), "log": str(log)} for p, log in pending],
        },
    )
    free = list(range(len(slots)))
    running: dict[int, tuple] = {}
    failed = 0
    while pending or running:
        while pending and free:
            slot = free.pop(0)
            p, log = pending.pop(0)
            clear_failed(p.run_parent)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if slots[slot]:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(slots[slot])
            handle = open(log, "w")
            proc = subprocess.Popen(fit_argv(p, slots[slot]), stdout=handle, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
            gpus = f" on GPUs {','.join(slots[slot])}" if slots[slot] else ""
            print(f"{p.run.name}: started (pid {proc.pid}{gpus}), log {log}", flush=True)
            running[slot] = (p, proc, log, handle)
        time.sleep(POLL_S)
        for slot, (p, proc, log, handle) in list(running.items()):
            if proc.poll() is None:
                continue
            handle.write(f"\n{ENDED}{proc.returncode}\n")
            handle.close()
            del running[slot]
            free.append(slot)
            done = finished_version(p.run_parent)
            if proc.returncode == 0 and done is not None:
                p.run_dir, p.results = done
                p.status = "done"
                print(f"{p.run.name}: done ({p.run_dir})", flush=True)
            else:
                failed += 1
                p.status = f"failed: exit code {proc.returncode}, log {log}"
                mark_failed(p.run_parent, p.status.removeprefix("failed: "))
                print(
                    f"run {p.run.name} failed (exit code {proc.returncode}); the sweep goes on. Its log {log} ends:\n{log_tail(log)}",
                    file=sys.stderr,
                    flush=True,
                )
            write_sweep_summary(planned)
    return failed
