"""Where a run directory is chosen and claimed, and where a run resumes.

* :func:`run_dir_for`: ``ROOT/NAME/VERSION``; with ``run.version: null`` the next free
  ``version_N``, one choice shared by every process of a launch (claim files for ``torchrun`` /
  SLURM launches, an environment variable for the ranks Lightning starts itself);
* :func:`resume_point`: the run directory ``fit`` writes into and the checkpoint it resumes from;
* :func:`final_results`, :func:`finished_version`, :func:`resume_checkpoint`: the one rule of "is this
  run finished, and where does it resume", which ``fit`` and every sweep launcher ask.

What a run directory then holds is :mod:`odise_pl.engine.run_files`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from omegaconf import DictConfig

from odise_pl.atomic_files import atomic_write
from odise_pl.engine.checkpoints import read_checkpoint
from odise_pl.errors import CheckpointError, ConfigError

_VERSION = re.compile(r"^version_(\d+)$")

#: set by the process that chose a ``version_N``; the ranks Lightning launches from it read it
RUN_DIR_ENV = "ODISE_PL_RUN_DIR"
#: how long a rank > 0 of an independent launch (torchrun, SLURM) waits for rank 0's choice
CLAIM_TIMEOUT_S = 600.0


def run_dir_for(cfg: DictConfig, *, fresh: bool = True) -> Path:
    """``ROOT/NAME/VERSION``: with ``version: null`` the next free ``version_N`` (never an existing one).

    Every process of one multi-process launch gets the same ``version_N``:

    * ranks that Lightning starts from this process (``trainer.devices > 1`` on one node) inherit
      the choice through the environment variable ``ODISE_PL_RUN_DIR`` (set by :func:`fit`);
    * ranks started independently (``torchrun``, SLURM's ``srun``: ``WORLD_SIZE`` / ``SLURM_NTASKS``
      > 1) agree through a claim file ``ROOT/NAME/.launches/<job id>`` that global rank 0 writes and
      the others wait for. The job id is ``SLURM_JOB_ID`` (+ step) or torchrun's ``--rdzv-id``; a
      re-queued SLURM job keeps its id and so its directory (and resumes from ``last.ckpt``).
      Without a job id a null ``run.version`` is refused: name the run.
    """
    base = Path(cfg.run.root) / cfg.run.name
    if cfg.run.version:
        return base / str(cfg.run.version)
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and launch_rank() > 0 and Path(inherited).parent == base:
        return Path(inherited)
    if _launch_world_size() > 1:
        return _claimed_run_dir(base)
    return next_version(base)


def next_version(base: Path) -> Path:
    """``base/version_N`` with N one past the highest existing (never an existing one, never a gap reused)."""
    taken = [int(m.group(1)) for p in base.glob("version_*") if (m := _VERSION.match(p.name))]
    return base / f"version_{max(taken, default=-1) + 1}"


def _env_int(*keys: str) -> int:
    for key in keys:
        value = os.environ.get(key, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def launch_rank() -> int:
    """This process's rank as its launcher set it (before any process group exists); 0 if none."""
    return max(_env_int("RANK", "SLURM_PROCID"), _env_int("LOCAL_RANK"), _env_int("NODE_RANK"))


def _launch_world_size() -> int:
    return _env_int("WORLD_SIZE", "SLURM_NTASKS")


def _launch_id() -> str | None:
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm-" + os.environ["SLURM_JOB_ID"] + "." + os.environ.get("SLURM_STEP_ID", "0")
    rdzv = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if rdzv and rdzv != "none":
        return "torchrun-" + rdzv
    return None


def _claimed_run_dir(base: Path) -> Path:
    launch = _launch_id()
    if launch is None:
        raise ConfigError(
            f"run.version is null in a {_launch_world_size()}-process launch without a job id, so the "
            "processes cannot agree on a new version_N: set run.version=NAME (the same on every "
            "process), or launch with torchrun --rdzv-id ID / under SLURM."
        )
    claim = base / ".launches" / re.sub(r"[^\w.-]", "_", launch)
    if _env_int("RANK", "SLURM_PROCID") == 0:  # global rank 0 chooses
        if claim.is_file():  # the same job again (re-queued): its directory
            return base / claim.read_text().strip()
        chosen = next_version(base)
        chosen.mkdir(parents=True, exist_ok=True)
        atomic_write(claim, chosen.name)  # others never read half a name
        return chosen
    deadline = time.monotonic() + CLAIM_TIMEOUT_S
    while not claim.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(
                f"rank {launch_rank()} waited {CLAIM_TIMEOUT_S:.0f} s for rank 0 to choose the run "
                f"directory ({claim} was not written): is {base} on a file system all nodes "
                "share? Otherwise set run.version=NAME."
            )
        time.sleep(0.2)
    return base / claim.read_text().strip()


def final_results(run_dir: Path) -> dict | None:
    """The results of a finished run directory (its first ``metrics*.json`` with final metrics), or None."""
    for metrics in sorted(Path(run_dir).glob("metrics*.json")):
        try:
            results = json.loads(metrics.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(results, dict) and isinstance(results.get("final"), dict):
            return results
    return None


def finished_version(run_parent: Path) -> tuple[str, dict] | None:
    """``(run_dir, results)`` of a finished ``version_*`` of a run (``ROOT/NAME``), or None."""
    for run_dir in sorted(Path(run_parent).glob("version_*")):
        results = final_results(run_dir)
        if results is not None:
            return str(run_dir), results
    return None


def resume_checkpoint(run_parent: Path) -> Path | None:
    """The newest ``last.ckpt`` of the versions of a run (``ROOT/NAME``), by time written; None: start afresh."""
    found = sorted(Path(run_parent).glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resume_point(cfg: DictConfig, resume: str | None = None) -> tuple[Path, Path | None]:
    """The run directory ``fit`` writes into and the checkpoint it resumes from (None: from scratch).

    * ``resume`` a run directory, or a checkpoint inside ``RUN/checkpoints/``: that run, resumed.
    * ``resume`` another checkpoint file: a new run directory, starting from that checkpoint.
    * no ``resume``: ``run_dir_for(cfg)``; an explicit ``run.version`` whose directory holds
      ``checkpoints/last.ckpt`` resumes from it (so re-running a killed command continues it).

    A finished run (``metrics.json`` written and ``trainer.max_steps`` reached) is refused. This is
    stricter than :func:`final_results` on purpose: any ``metrics.json`` in the directory ``fit`` would
    write into stops it from writing a second run's results beside it.
    """
    if resume is not None:
        given = Path(resume)
        if given.is_dir():
            run_dir, ckpt = given, given / "checkpoints" / "last.ckpt"
            if not ckpt.is_file():
                raise CheckpointError(
                    f"--resume {given}: no checkpoints/last.ckpt in this directory; give a run directory of odise-pl fit or a .ckpt file."
                )
        elif given.is_file():
            ckpt = given
            run_dir = given.parent.parent if given.parent.name == "checkpoints" else run_dir_for(cfg)
            if run_dir != given.parent.parent and (run_dir / "checkpoints" / "last.ckpt").exists():
                raise ConfigError(
                    f"--resume {given} would start in {run_dir}, which holds another run's "
                    "checkpoint; set run.version to a new name, or leave it null."
                )
        else:
            raise CheckpointError(f"--resume {resume}: no such checkpoint file or run directory.")
    else:
        run_dir = run_dir_for(cfg)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            if (run_dir / "metrics.json").exists():
                raise ConfigError(
                    f"run directory {run_dir} holds a finished run without a checkpoint to "
                    "resume: set run.version to a new name, or leave it null for the next "
                    "free version."
                )
            return run_dir, None  # new, empty, or killed before its first checkpoint
    done = (run_dir / "metrics.json").exists()
    if done and int(read_checkpoint(ckpt).get("global_step", 0)) >= int(cfg.trainer.max_steps):
        raise ConfigError(
            f"run {run_dir} already finished (trainer.max_steps={cfg.trainer.max_steps} "
            "reached, metrics.json written). Raise trainer.max_steps to train it further, "
            "or set run.version to a new name (null: the next free version) for a new run."
        )
    return run_dir, ckpt
