"""Checkpoints are written atomically, read safely, and refused when they belong to another config."""

from __future__ import annotations

import errno
import resource
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from odise_pl.engine.checkpoints import (
    AtomicCheckpointIO,
    check_config,
    config_differences,
    export_safetensors,
    load_weights,
    read_checkpoint,
)
from odise_pl.errors import CheckpointError
from tests.tiny_lightning import TinyRegression, tiny_trainer


class _FailFrom(L.Callback):
    """Makes every checkpoint write from step ``step`` on fail: ``how`` = 'enospc' or 'fsize'."""

    def __init__(self, step: int, how: str, monkeypatch) -> None:
        self.step, self.how, self.patch = step, how, monkeypatch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if self.how == "fsize":  # a real write failure: the kernel refuses to grow a file past the limit
            size = (Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt").stat().st_size
            self.old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            self.old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, self.old_limit[1]))
        else:  # disk full half-way through the file
            real_save = torch.save

            def full_disk(obj, f, *args, **kwargs):
                real_save(obj, f, *args, **kwargs)
                f.truncate(f.tell() // 2)
                raise OSError(errno.ENOSPC, "No space left on device")

            self.patch.setattr(torch, "save", full_disk)

    def restore(self) -> None:
        if hasattr(self, "old_limit"):
            resource.setrlimit(resource.RLIMIT_FSIZE, self.old_limit)
            signal.signal(signal.SIGXFSZ, self.old_handler)


@pytest.mark.parametrize("how", ["enospc", "fsize"])
def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, how):
    fail = _FailFrom(3, how, monkeypatch)
    try:
        with pytest.raises(CheckpointError) as err:
            tiny_trainer(tmp_path, max_steps=6, callbacks=[fail]).fit(TinyRegression())
    finally:
        fail.restore()
        monkeypatch.undo()
    last = tmp_path / "checkpoints" / "last.ckpt"
    message = str(err.value)
    assert f"cannot write checkpoint {last}" in message and "The previous last.ckpt is intact" in message
    assert "run the same command again to resume" in message
    if how == "enospc":
        assert "No space left on device" in message
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    ckpt = read_checkpoint(last)
    assert ckpt["global_step"] == 3

    # ... and the run resumes from it to the end
    trainer = tiny_trainer(tmp_path, max_steps=6)
    trainer.fit(TinyRegression(), ckpt_path=str(last))
    assert trainer.global_step == 6 and read_checkpoint(last)["global_step"] == 6


def test_unsafe_truncated_and_foreign_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, unsafe)
    with pytest.raises(CheckpointError, match=f"checkpoint {unsafe} holds more than tensors and plain values"):
        read_checkpoint(unsafe)
    assert not marker.exists()  # nothing of the pickle ran

    good = tmp_path / "good.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(300)}, "global_step": 1}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=f"checkpoint {truncated} is truncated or corrupt"):
        read_checkpoint(truncated)
    other = tmp_path / "weights.ckpt"
    torch.save({"w": torch.ones(2)}, other)
    with pytest.raises(CheckpointError, match="is not a Lightning checkpoint"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.ckpt")
    assert good.stat().st_mode & 0o044  # readable like any other file, not mkstemp's 0600


def test_config_differences_are_listed():
    saved = {
        "seed": 0,
        "model": {"mask_generator": {"num_queries": 24, "hidden_dim": 64}},
        "run": {"version": "a"},
        "trainer": {"max_steps": 10},
    }
    now = {
        "seed": 1,
        "model": {"mask_generator": {"num_queries": 100, "hidden_dim": 64}},
        "run": {"version": "b"},
        "trainer": {"max_steps": 20},
    }
    assert config_differences(saved, now, ignore=("run", "trainer.max_steps")) == [
        "model.mask_generator.num_queries: checkpoint 24, now 100",
        "seed: checkpoint 0, now 1",
    ]
    with pytest.raises(CheckpointError) as err:
        check_config({"hyper_parameters": {"config": saved}}, now, "x.ckpt", only=("model",), action="evaluate it")
    assert "x.ckpt was trained with another configuration (1 difference)" in str(err.value)
    assert "  - model.mask_generator.num_queries: checkpoint 24, now 100" in str(err.value)
    assert "seed" not in str(err.value) and "to evaluate it" in str(err.value)


def test_fit_refuses_to_resume_a_checkpoint_of_another_experiment(tmp_path, capsys):
    from omegaconf import OmegaConf

    from odise_pl.cli import main
    from odise_pl.config import load_config

    quickstart = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
    base = [f"run.root={tmp_path / 'runs'}", "run.version=v", f"data.root={tmp_path / 'nodata'}"]
    old = OmegaConf.to_container(load_config(quickstart, [*base, "optim.lr=0.5"]), resolve=True)
    ckpt = tmp_path / "runs" / "quickstart" / "v" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 3, "hyper_parameters": {"config": old}}, ckpt)
    assert main(["fit", "-c", quickstart, *base, "trainer.max_steps=50"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt} was trained with another configuration (1 difference)" in err, err
    assert "optim.lr: checkpoint 0.5, now 0.001" in err and "trainer.max_steps" not in err, err
    assert not (tmp_path / "nodata").exists()  # refused before anything was built


def test_safetensors_export_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    path = export_safetensors(model, tmp_path / "weights.safetensors", {"global_step": 7})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"global_step": "7"}
    other = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    load_weights(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_weights(nn.Linear(5, 5), path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_weights(other, tmp_path / "bad.safetensors")


def test_the_initialisation_rule_may_differ_when_evaluating(tmp_path):
    from odise_pl.engine.weights import load_checkpoint

    model = nn.Linear(2, 2)
    model.hparams = {"config": {"model": {"mask_generator": {"init": "mask2former", "num_queries": 5}}}}
    saved = {"model": {"mask_generator": {"num_queries": 5}}}  # written before model.mask_generator.init existed
    path = tmp_path / "x.ckpt"
    torch.save({"hyper_parameters": {"config": saved}, "state_dict": model.state_dict()}, path)
    load_checkpoint(model, str(path))  # the init rule is overwritten by the loaded weights: not a difference
    saved["model"]["mask_generator"]["num_queries"] = 6
    torch.save({"hyper_parameters": {"config": saved}, "state_dict": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="num_queries: checkpoint 6, now 5"):
        load_checkpoint(model, str(path))
