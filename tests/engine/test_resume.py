"""A run survives being killed (issue #8): SIGKILL mid-run, the same command again, the same result.

The killed run is a real ``odise-pl fit`` process; the reference and the restarted run go through
the same ``main`` in this process (with a fresh CLIP cache, so that every run builds its random
CLIP from the seed exactly as a new process does).  Checkpoints are written every 2 steps; the
kill comes as soon as one exists: at step 2 (mid-epoch) or 4 (an epoch boundary), whichever the
killer sees first.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from odise_pl.cli import main
from odise_pl.models import clip_model
from tests.dying_fit import dying_command
from tests.micro_run import micro_run
from tests.tiny_lightning import TinyRegression, tiny_trainer

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")
MAX_STEPS = 6  # 8 training images in batches of 2: 4 steps per epoch, so the run crosses an epoch


def _overrides(tmp_path: Path, version: str) -> list[str]:
    return [*micro_run(tmp_path, steps=MAX_STEPS, num_val=1), f"run.version={version}", "checkpoint.every_n_steps=2"]


def _fit_in_process(monkeypatch, argv: list[str]) -> None:
    monkeypatch.setattr(clip_model, "_CACHE", {})  # build the random CLIP from the seed, as a new process does
    assert main(argv) == 0


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow  # about 50 s of CPU time: three tiny trainings, one of them in a new process
def test_sigkill_then_same_command_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    reference = tmp_path / "runs" / "quickstart" / "reference"
    _fit_in_process(monkeypatch, ["fit", "-c", QUICKSTART, *_overrides(tmp_path, "reference")])

    argv = ["fit", "-c", QUICKSTART, *_overrides(tmp_path, "killed")]
    killed = tmp_path / "runs" / "quickstart" / "killed"
    # the child SIGKILLs itself right after its step-2 checkpoint is on disk
    code = dying_command(argv, "checkpoint.get('global_step', 0) >= 2 and str(path).endswith('last.ckpt')")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, f"the child was not killed mid-run: {child.returncode}\n{err[-3000:]}"
    interrupted = _last(killed)
    assert 2 <= interrupted["global_step"] < MAX_STEPS
    assert not (killed / "metrics.json").exists()

    capsys.readouterr()
    _fit_in_process(monkeypatch, argv)  # the same command again: it resumes
    assert f"resuming from {killed / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out

    want, got = _last(reference), _last(killed)
    assert got["global_step"] == want["global_step"] == MAX_STEPS
    assert want["state_dict"].keys() == got["state_dict"].keys()
    different = [k for k in want["state_dict"] if not torch.equal(want["state_dict"][k], got["state_dict"][k])]
    assert not different, f"resumed from step {interrupted['global_step']}; differing weights: {different[:5]}"
    assert (killed / "metrics.json").is_file() and (killed / "weights.safetensors").is_file()


def test_a_finished_run_is_not_resumed_again(tmp_path, monkeypatch, capsys):
    from odise_pl.config import load_config
    from odise_pl.engine.run_dirs import resume_point
    from odise_pl.errors import ConfigError

    run = tmp_path / "runs" / "quickstart" / "done"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": MAX_STEPS}, run / "checkpoints" / "last.ckpt")
    cfg = load_config(QUICKSTART, _overrides(tmp_path, "done"))
    assert resume_point(cfg) == (run, run / "checkpoints" / "last.ckpt")  # killed at the very end: resume
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"run {run} already finished .*Raise trainer.max_steps"):
        resume_point(cfg)
    more = load_config(QUICKSTART, [*_overrides(tmp_path, "done"), f"trainer.max_steps={MAX_STEPS + 2}"])
    assert resume_point(more)[1] == run / "checkpoints" / "last.ckpt"
    # a null version never resumes: it takes the next free version_N
    fresh = load_config(QUICKSTART, [*_overrides(tmp_path, "done"), "run.version=null"])
    assert resume_point(fresh) == (run.parent / "version_0", None)


class _Killed(Exception):
    pass


class _Crash(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise _Killed  # stands in for the kill: nothing after the last checkpoint survives


@pytest.mark.parametrize("crash_at", [4, 6])  # mid-epoch, and exactly at the end of the first epoch
def test_resumed_loader_and_rng_continue_where_they_stopped(tmp_path, crash_at):
    """The tiny module draws from the global RNG every step and sees 6 batches per epoch."""
    L.seed_everything(0)
    reference = TinyRegression()
    tiny_trainer(tmp_path / "reference", max_steps=10).fit(reference)

    L.seed_everything(0)
    crashed = TinyRegression()
    with pytest.raises(_Killed):
        tiny_trainer(tmp_path / "run", max_steps=10, callbacks=[_Crash(crash_at)]).fit(crashed)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == crash_at

    L.seed_everything(0)
    resumed = TinyRegression()
    tiny_trainer(tmp_path / "run", max_steps=10).fit(resumed, ckpt_path=str(ckpt))
    seen = crashed.seen_batches[:crash_at] + resumed.seen_batches
    assert len(seen) == len(reference.seen_batches) == 10
    assert all(torch.equal(a, b) for a, b in zip(seen, reference.seen_batches))  # the same samples, in order
    assert torch.equal(resumed.layer.weight, reference.layer.weight)  # and the same random draws
