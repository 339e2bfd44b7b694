"""``odise-pl sweep status``: the state of every run of a sweep (pending, running, done, failed).

A run with final metrics (``SWEEP_DIR/NAME/version_N/metrics*.json``) is ``done``. Otherwise its newest
launch record (:mod:`odise_pl.launchers.records`) says where to look: a SLURM job's state comes from
``squeue`` (``sacct`` too where SLURM keeps accounting); a job no longer queued that left no final
metrics ``failed``, shown with the tail of its log. A run of the ``local`` launcher is ``running`` while
the launching process lives. A run never launched is ``pending``.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from odise_pl.launchers.local import ENDED, log_tail
from odise_pl.launchers.records import latest_launches

#: SLURM job states that mean "waiting to start" and "started" (others: the job has ended)
WAITING = {
    "PENDING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "RESV_DEL_HOLD",
    "SUSPENDED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
}
STARTED = {"RUNNING", "COMPLETING"}


@dataclass
class RunState:
    """One run's state: ``state`` is pending, running, done or failed; ``detail`` says more."""

    name: str
    state: str
    detail: str = ""
    job_id: str = ""
    log: str = ""
    tail: str = ""


def queued_jobs() -> dict[str, str]:
    """``{job id: state}`` of the jobs SLURM still knows (``squeue``; array tasks one by one).

    Returns {} when ``squeue`` is not there or fails.
    """
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def accounted_jobs(job_ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` from ``sacct`` (only where SLURM keeps accounting; {} otherwise)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            job, state = line.split("|", 1)
            states[job] = state.split()[0] if state else ""
    return states


def job_error(result_pickle: str) -> str:
    """The first line of the error a submitit job pickled ('' if it did not fail or left no result)."""
    try:
        with open(result_pickle, "rb") as handle:
            outcome, payload = pickle.load(handle)  # submitit's own result file, written by this sweep's job
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError, AttributeError, ImportError):
        return ""
    if outcome != "error":
        return ""
    lines = [line for line in str(payload).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "error"


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def run_states(planned: list) -> list[RunState]:
    """The state of every planned run (see the module docstring)."""
    from odise_pl.engine.run_dirs import finished_version, resume_checkpoint

    if not planned:
        return []
    launches = latest_launches(planned[0].sweep_dir)
    slurm_ids = [e["job_id"] for e in launches.values() if e.get("launcher") == "slurm" and e.get("job_id")]
    queued = queued_jobs() if slurm_ids else {}
    accounted = accounted_jobs([j for j in slurm_ids if j not in queued])
    states = []
    for p in planned:
        name = p.run.name
        done = finished_version(p.run_parent)
        entry = launches.get(name, {})
        log, job = entry.get("log", ""), str(entry.get("job_id", ""))
        if done is not None:
            final = done[1]["final"]
            shown = f"PQ {final['PQ']:.2f}" if isinstance(final.get("PQ"), (int, float)) else "final metrics"
            states.append(RunState(name, "done", f"{shown}, {done[0]}", job, log))
        elif entry.get("launcher") == "slurm":
            slurm = queued.get(job) or accounted.get(job, "")
            if slurm in WAITING:
                states.append(RunState(name, "pending", f"job {job} {slurm.lower()}", job, log))
            elif slurm in STARTED:
                states.append(RunState(name, "running", f"job {job}", job, log))
            else:
                error = job_error(entry.get("result", ""))
                why = error or (f"job {job} ended ({slurm})" if slurm else f"job {job} ended without final metrics")
                states.append(RunState(name, "failed", why, job, log, log_tail(entry.get("stderr")) + "\n" + log_tail(log)))
        elif entry.get("launcher") == "local":
            here = entry.get("host") == socket.gethostname()
            ended = ENDED in log_tail(log, lines=2)
            alive = here and pid_alive(entry.get("launcher_pid")) and not ended
            if alive and Path(log).exists():
                states.append(RunState(name, "running", "local process", "", log))
            elif alive:
                states.append(RunState(name, "pending", "waiting for a free slot", "", log))
            elif Path(log).exists():
                why = log_tail(log, lines=1).replace(ENDED, "exit code ") if ended else "its process ended"
                states.append(RunState(name, "failed", f"{why}, no final metrics", "", log, log_tail(log)))
            else:
                states.append(RunState(name, "pending", "not started", "", log))
        else:
            ckpt = resume_checkpoint(p.run_parent)
            states.append(RunState(name, "pending", f"unfinished, resumes from {ckpt}" if ckpt else "not started"))
    return states


def format_states(states: list[RunState]) -> str:
    """A table of the states, then the log tail of every failed run."""
    width = max([len(s.name) for s in states] + [3])
    lines = [f"{'run':<{width}}  {'state':<8}  detail"]
    lines += [f"{s.name:<{width}}  {s.state:<8}  {s.detail}" + (f"  (log {s.log})" if s.log else "") for s in states]
    counts = {state: sum(s.state == state for s in states) for state in ("pending", "running", "done", "failed")}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    for s in states:
        if s.state == "failed" and s.tail.strip():
            lines += ["", f"--- {s.name}: the end of its log ---", s.tail.strip()]
    return "\n".join(lines)
