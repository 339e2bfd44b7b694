"""A few-parameter LightningModule and a Trainer with the project's checkpoint machinery, for fast tests."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from odise_pl.callbacks.checkpointing import ResumeCheckpoint, RngState
from odise_pl.callbacks.nonfinite_loss import NonFiniteLoss
from odise_pl.data_modules.sampling import ResumableDataLoader, ResumableShuffleSampler
from odise_pl.engine.checkpoints import AtomicCheckpointIO


class TinyRegression(L.LightningModule):
    """y = x W: the loss of the steps in ``nan_at_steps`` is NaN (through the ``bad`` term)."""

    def __init__(self, nan_at_steps: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.save_hyperparameters({"config": {"model": {"width": 4}}})
        self.layer = nn.Linear(4, 1)
        self.nan_at_steps = set(nan_at_steps)
        self.seen_batches: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x = batch.float()
        fit = (self.layer(x) - x.sum(1, keepdim=True)).pow(2).mean()
        bad = torch.tensor(float("nan") if self.global_step in self.nan_at_steps else 0.0)
        jitter = torch.rand(())  # draws from the global RNG, as point sampling and dropout do
        self.last_loss_terms = {"loss_fit": fit.detach(), "loss_bad": bad}
        self.seen_batches.append(batch.clone())
        return fit * (1 + jitter) + bad

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)

    def train_dataloader(self):
        data = torch.arange(48, dtype=torch.float32).reshape(12, 4) / 48
        sampler = ResumableShuffleSampler(len(data), seed=0, num_replicas=1, rank=0)
        return ResumableDataLoader(_Rows(data), batch_size=2, sampler=sampler)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key):
        return self.data[key[0]]


def tiny_trainer(
    run_dir: Path,
    *,
    max_steps: int,
    every_n_steps: int = 1,
    on_nonfinite: str = "stop",
    max_skips: int = 100,
    callbacks: list | None = None,
) -> L.Trainer:
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ResumeCheckpoint(str(run_dir / "checkpoints"), every_n_steps=every_n_steps),
            RngState(),
            NonFiniteLoss(on_nonfinite, max_skips),
            *(callbacks or []),
        ],
    )
