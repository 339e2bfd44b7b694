"""A NaN loss stops the run naming the step and the terms, and keeps the last good checkpoint; or is skipped."""

from __future__ import annotations

import pytest
import torch

from odise_pl.errors import NumericalError
from tests.tiny_lightning import TinyRegression, tiny_trainer


def test_stop_names_step_and_terms_and_keeps_the_last_good_checkpoint(tmp_path):
    model = TinyRegression(nan_at_steps=(3,))
    with pytest.raises(NumericalError) as err:
        tiny_trainer(tmp_path, max_steps=6).fit(model)
    message = str(err.value)
    assert "non-finite training loss (nan) at global step 3" in message, message
    assert "loss_bad=nan  <-" in message and "loss_fit=" in message, message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is {last} (step 3)" in message, message
    assert "trainer.on_nonfinite=skip" in message
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert torch.equal(ckpt["state_dict"]["layer.weight"], model.layer.weight.detach())  # no bad update applied


def test_skip_leaves_weights_alone_counts_and_gives_up_after_the_limit(tmp_path):
    class Watch(TinyRegression):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.seen.append(self.layer.weight.detach().clone())

    model = Watch(nan_at_steps=(2,))
    model.seen = []
    trainer = tiny_trainer(tmp_path / "a", max_steps=5, on_nonfinite="skip")
    trainer.fit(model)
    assert trainer.global_step == 5  # the skipped step counts towards max_steps
    guard = next(c for c in trainer.callbacks if type(c).__name__ == "NonFiniteLoss")
    assert guard.skipped == 1
    assert torch.equal(model.seen[2], model.seen[1]) and not torch.equal(model.seen[3], model.seen[2])
    assert all(torch.isfinite(w).all() for w in model.seen)

    with pytest.raises(NumericalError, match=r"more than trainer.max_nonfinite_skips=1 steps"):
        tiny_trainer(tmp_path / "b", max_steps=6, on_nonfinite="skip", max_skips=1).fit(TinyRegression(nan_at_steps=(1, 3)))


def test_on_nonfinite_is_validated_with_file_and_line(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.errors import ConfigError

    exp = tmp_path / "exp.yaml"
    exp.write_text("trainer:\n  max_steps: 3\n  on_nonfinite: ignore\n")
    with pytest.raises(
        ConfigError,
        match=r"exp.yaml: 'trainer.on_nonfinite' must be one of stop, skip "
        r"\(line 3\), got 'ignore' \(str\)",
    ):
        load_config(exp)
