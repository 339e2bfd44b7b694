"""The ``slurm`` launcher: one SLURM job per run, through submitit (a job array when several runs are pending).

Each job runs :func:`odise_pl.launchers.inline.fit_planned` for its run, in the working directory the sweep
was launched from: a run that finished is skipped, an unfinished one resumes from its newest ``last.ckpt``.
Its output goes to ``SWEEP_DIR/slurm/JOBID/JOBID_0_log.out`` (and ``.err``).

Preemption and time limits: SLURM sends submitit's signal (``SIGUSR2``, ``signal_delay_s`` before the
time limit; ``scancel --signal=USR2 JOBID`` sends it by hand). The run then writes ``last.ckpt`` at the end
of the training step in progress (:class:`PreemptionCheckpoint`), and submitit requeues the job
(``scontrol requeue``); the requeued job resumes from that checkpoint and ends with the same weights as an
uninterrupted run. Lightning's own SLURM requeueing is switched off (``SLURMEnvironment(auto_requeue=False)``)
so that exactly one handler acts on the signal. In a job of several tasks (``gpus_per_node`` > 1 or
``nodes`` > 1) the checkpoint is the newest periodic one (``checkpoint.every_n_steps``).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import submitit

from odise_pl.errors import ConfigError
from odise_pl.launchers.records import write_record

if TYPE_CHECKING:
    from odise_pl.launchers.settings import LauncherSettings
    from odise_pl.sweeps.plan import PlannedRun


class PreemptionCheckpoint(L.Callback):
    """On the preemption signal: ``last.ckpt`` at the end of the current training step, then requeue.

    Outside training (setup, the final evaluation) the job is requeued at once: it resumes from the
    ``last.ckpt`` written when training ended.

    Args:
        signum: the signal submitit's job environment handles (``SIGUSR2`` by default).
        requeue: submitit's handler for it (checkpoints the job's callable, requeues, exits).
    """

    def __init__(self, *, signum: int, requeue) -> None:
        self.signum, self.requeue = signum, requeue
        self.requested = False
        self.training = False

    @classmethod
    def install(cls) -> PreemptionCheckpoint:
        """Take over submitit's signal handler in this job process (submitit's runs after the checkpoint)."""
        signum = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        callback = cls(signum=signum, requeue=signal.getsignal(signum))
        signal.signal(signum, callback.on_signal)
        return callback

    def on_signal(self, signum, frame) -> None:
        if not self.training:
            self.requeue(signum, frame)
            return
        print(f"odise-pl: got {signal.Signals(signum).name}: last.ckpt at the end of this step, then requeue", flush=True)
        self.requested = True

    def on_train_start(self, trainer, pl_module) -> None:
        self.training = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested:
            self.checkpoint_and_requeue(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.training = False
        if self.requested:  # the last step's checkpoint is written by ResumeCheckpoint.on_train_end
            self.requeue(self.signum, None)

    def checkpoint_and_requeue(self, trainer) -> None:
        folder = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else trainer.default_root_dir
        path = Path(folder) / "last.ckpt"
        trainer.save_checkpoint(str(path))
        print(f"odise-pl: wrote {path} at step {trainer.global_step}; requeueing", flush=True)
        self.requeue(self.signum, None)


class SweepJob(submitit.helpers.Checkpointable):
    """What one SLURM job runs: ``odise-pl fit`` of one sweep run, resuming its ``last.ckpt``.

    Args:
        name: the run's name (its folder in the sweep directory).
        base: the experiment file.
        overrides: the run's overrides (``PlannedRun.overrides``, resources included).
        workdir: the directory relative paths of the config are relative to.
    """

    def __init__(self, *, name: str, base: str, overrides: list[str], workdir: str) -> None:
        self.name, self.base, self.overrides, self.workdir = name, base, list(overrides), workdir

    def __call__(self) -> dict:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        from odise_pl.config import load_config
        from odise_pl.config.sweep import SweepRun
        from odise_pl.engine.run_dirs import resume_checkpoint
        from odise_pl.launchers.inline import fit_planned
        from odise_pl.sweeps.plan import PlannedRun

        os.chdir(self.workdir)
        cfg = load_config(self.base, self.overrides)
        p = PlannedRun(SweepRun(self.name, self.overrides, Path(self.base)), self.overrides, cfg, Path(str(cfg.run.root)))
        ckpt = resume_checkpoint(p.run_parent)
        print(f"odise-pl: run {self.name}" + (f", resuming from {ckpt}" if ckpt else ""), flush=True)
        single = int(os.environ.get("SLURM_NTASKS", "1")) == 1
        callbacks = [PreemptionCheckpoint.install()] if single else []
        message = fit_planned(p, callbacks=callbacks, plugins=[SLURMEnvironment(auto_requeue=False)])
        print(f"odise-pl: run {self.name}: {message}", flush=True)
        return {"status": p.status, "run_dir": p.run_dir, "final": p.results.get("final")}


def executor_for(sweep_dir: Path, settings: LauncherSettings) -> submitit.SlurmExecutor:
    """A submitit executor with the resources of ``settings``; its jobs write under ``SWEEP_DIR/slurm``."""
    # the job command is `PYTHON -u -m submitit.core._submit FOLDER`: PYTHON runs our entry point instead
    python = f"{shlex.quote(sys.executable)} -m odise_pl.launchers.job_entry"
    executor = submitit.SlurmExecutor(folder=str(sweep_dir / "slurm" / "%j"), max_num_timeout=settings.max_requeues, python=python)
    params = {
        "job_name": f"odise-{sweep_dir.name}",
        "nodes": settings.nodes,
        "ntasks_per_node": settings.tasks_per_node,
        "time": settings.time,
        "signal_delay_s": settings.signal_delay_s,
        "array_parallelism": settings.array_parallelism,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "cpus_per_task": settings.cpus_per_task,
        "mem": settings.mem,
        "gpus_per_node": settings.gpus_per_node or None,
        "additional_parameters": dict(settings.additional_parameters) or None,
        "setup": list(settings.setup) or None,
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def sbatch_message(err: Exception) -> str:
    """SLURM's own words from a failed submission (sbatch's ``error:`` lines), else the error's text."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower() and "sbatch" in line.lower()]
    return "\n".join(dict.fromkeys(lines)) or text.splitlines()[-1]


def submit_runs(planned: list[PlannedRun], settings: LauncherSettings) -> list[dict]:
    """Submit one job per run that has not finished; returns the record entries (job id, log, run folder).

    Raises:
        ConfigError: SLURM refused the submission (its message), or there is no SLURM here.
    """
    from odise_pl.launchers.inline import skip_if_finished

    pending = []
    for p in planned:
        if skip_if_finished(p):
            print(f"{p.run.name}: finished before ({p.run_dir}), skipped")
        else:
            pending.append(p)
    if not pending:
        return []
    sweep_dir = pending[0].sweep_dir
    try:
        executor = executor_for(sweep_dir, settings)
        workdir = os.getcwd()
        with executor.batch():
            jobs = [
                executor.submit(SweepJob(name=p.run.name, base=str(p.run.base), overrides=p.overrides, workdir=workdir)) for p in pending
            ]
    except (RuntimeError, ValueError, OSError, submitit.core.utils.FailedJobError) as err:
        if "srun" in str(err) and "slurm cluster" in str(err):
            raise ConfigError(
                "--launcher slurm: no SLURM here (srun/sbatch not found); run on a cluster's login "
                "node, or start a local one with tools/local_slurm.sh start."
            ) from None
        raise ConfigError(
            f"SLURM refused the jobs of sweep {sweep_dir.name}:\n{sbatch_message(err)}\n"
            "Check the launcher's resources (partition, account, qos, time, mem, gpus_per_node)."
        ) from None
    entries = []
    for p, job in zip(pending, jobs):
        p.status = f"submitted: job {job.job_id}"
        entry = {
            "name": p.run.name,
            "job_id": job.job_id,
            "run_parent": str(p.run_parent),
            "log": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
            "result": str(job.paths.result_pickle),
        }
        entries.append(entry)
        print(f"{p.run.name}: job {job.job_id}, run directory {p.run_parent}/version_*, log {job.paths.stdout}", flush=True)
    record = write_record(
        sweep_dir, {"launcher": "slurm", "runs": entries, "resources": {k: v for k, v in vars(settings).items() if k != "name"}}
    )
    print(f"submitted {len(entries)} jobs; launch record {record}; `odise-pl sweep status -c ...` shows their states", file=sys.stderr)
    return entries


def wait_for_jobs(entries: list[dict], *, poll_s: float = 2.0) -> None:
    """Block until none of the jobs of ``entries`` is queued or running (``squeue``); prints state changes."""
    import time

    from odise_pl.launchers.status import queued_jobs

    shown: dict[str, str] = {}
    while True:
        queued = queued_jobs()
        for entry in entries:
            state = queued.get(entry["job_id"], "ended")
            if shown.get(entry["job_id"]) != state:
                shown[entry["job_id"]] = state
                print(f"{entry['name']}: job {entry['job_id']} {state.lower()}", flush=True)
        if not any(entry["job_id"] in queued for entry in entries):
            return
        time.sleep(poll_s)


def run_slurm(planned: list[PlannedRun], settings: LauncherSettings) -> int:
    """Submit the pending runs; with ``settings.wait``, block until their jobs end. Returns the number of failed runs
    (0 when not waiting: ``odise-pl sweep status`` tells later)."""
    from odise_pl.engine.run_dirs import finished_version
    from odise_pl.launchers.status import job_error

    entries = submit_runs(planned, settings)
    if not settings.wait or not entries:
        return 0
    wait_for_jobs(entries)
    failed = 0
    by_name = {e["name"]: e for e in entries}
    for p in planned:
        if p.run.name not in by_name:
            continue
        done = finished_version(p.run_parent)
        if done is not None:
            p.run_dir, p.results = done
            p.status = "done"
        else:
            failed += 1
            entry = by_name[p.run.name]
            error = job_error(entry["result"])
            p.status = f"failed: job {entry['job_id']}" + (f": {error}" if error else "")
            print(
                f"run {p.run.name} failed (job {entry['job_id']}"
                + (f": {error}" if error else "")
                + f"); the sweep went on. Log: {entry['log']}",
                file=sys.stderr,
            )
    return failed
