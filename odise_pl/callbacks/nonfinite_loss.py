"""Stop (or skip the update) when the training loss is NaN or infinite.

``trainer.on_nonfinite: stop`` raises :class:`~odise_pl.errors.NumericalError` before the
backward pass, naming the step and every loss term, so the optimizer never applies the bad
update and the last checkpoint (written before) stays good.  ``skip`` drops that step's
gradients (the weights and the optimizer state stay as they were), counts it in
``train/nonfinite_skipped``, and stops once more than ``max_skips`` steps were skipped.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from odise_pl.errors import NumericalError


class NonFiniteLoss(L.Callback):
    """Guards training against non-finite losses.

    Args:
        mode: ``"stop"`` or ``"skip"``.
        max_skips: in ``skip`` mode, stop once more steps than this were skipped.

    The loss terms named in the message come from ``pl_module.last_loss_terms`` (a dict of
    scalar tensors the module sets in ``training_step``) when it has one.
    """

    def __init__(self, mode: str = "stop", max_skips: int = 100) -> None:
        if mode not in ("stop", "skip"):
            raise ValueError(f"mode must be 'stop' or 'skip', got {mode!r}")
        self.mode = mode
        self.max_skips = int(max_skips)
        self.skipped = 0
        self._drop_grads = False
        self._last_saved: tuple[int, str] | None = None

    # -- what the message names ----------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        path = getattr(trainer.checkpoint_callback, "last_model_path", "") or "last.ckpt"
        self._last_saved = (int(checkpoint.get("global_step", trainer.global_step)), str(path))

    @staticmethod
    def _terms(pl_module) -> str:
        terms = getattr(pl_module, "last_loss_terms", None) or {}
        shown = []
        for name, value in terms.items():
            v = float(value.detach().float().cpu()) if torch.is_tensor(value) else float(value)
            if name[-1:].isdigit() and math.isfinite(v):
                continue  # auxiliary decoder layers: named only when they are the culprit
            shown.append(f"{name}={v:.4g}" + ("  <-" if not math.isfinite(v) else ""))
        return ", ".join(shown) if shown else "(no loss terms recorded)"

    def _message(self, trainer, pl_module, loss: torch.Tensor) -> str:
        kept = (
            f"The last good checkpoint is {self._last_saved[1]} (step {self._last_saved[0]}); rerun the same command to resume from it"
            if self._last_saved
            else "No checkpoint was written yet"
        )
        return (
            f"non-finite training loss ({float(loss.detach()):.4g}) at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); loss terms: {self._terms(pl_module)}. {kept}. "
            "Lower optim.lr, raise optim.warmup_steps or enable optim.clip_grad_norm; or set "
            "trainer.on_nonfinite=skip to skip such steps."
        )

    # -- the guard -----------------------------------------------------------------------
    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        if self.mode == "stop":
            raise NumericalError(self._message(trainer, pl_module, loss))
        self.skipped += 1
        self._drop_grads = True
        if self.skipped > self.max_skips:
            raise NumericalError(
                f"more than trainer.max_nonfinite_skips={self.max_skips} steps had a "
                f"non-finite loss; the last: {self._message(trainer, pl_module, loss)}"
            )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._drop_grads:  # no gradient: the optimizer leaves every parameter and its state alone
            optimizer.zero_grad(set_to_none=True)
            self._drop_grads = False
        if self.mode == "skip":
            pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
