"""Callbacks that make a run resumable: when ``last.ckpt`` is written, and the RNG states in it.

* :class:`ResumeCheckpoint` writes ``last.ckpt`` every N training steps (Lightning's
  ``ModelCheckpoint``), at the end of every validation inside ``fit``, and when training ends.
  Together with :class:`~odise_pl.engine.checkpoints.AtomicCheckpointIO` the file always holds a
  complete checkpoint: weights, optimizer, scheduler, loop progress (epoch, batch) and the
  training loader's position (:class:`~odise_pl.data_modules.sampling.ResumableDataLoader`).
* :class:`RngState` adds the torch / CUDA / numpy / Python RNG states to checkpoints and puts
  them back right before the first training step after a resume, so a resumed run draws the
  same random numbers (point sampling, dropout) as an uninterrupted one.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class ResumeCheckpoint(ModelCheckpoint):
    """``DIR/last.ckpt`` every ``every_n_steps`` steps (0: never by count), after each validation, at the end.

    Args:
        dirpath: the run's ``checkpoints`` folder.
        every_n_steps: training steps between two writes (0 disables the step trigger).
    """

    def __init__(self, dirpath: str, every_n_steps: int = 0) -> None:
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=int(every_n_steps) if every_n_steps > 0 else None,
            every_n_epochs=None if every_n_steps > 0 else 0,
            enable_version_counter=False,
        )

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last_now(trainer)


class RngState(L.Callback):
    """Saves the RNG states in checkpoints; restores them before the first step after a resume."""

    def __init__(self) -> None:
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        np_state = np.random.get_state(legacy=False)
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # plain ints / tensors only, so that the checkpoint loads with weights_only=True
            "numpy": {
                "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                "pos": int(np_state["state"]["pos"]),
                "has_gauss": int(np_state["has_gauss"]),
                "gauss": float(np_state["gauss"]),
            },
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._pending = state

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        n = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                "has_gauss": n["has_gauss"],
                "gauss": n["gauss"],
            }
        )
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
