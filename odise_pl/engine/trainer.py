"""The Lightning Trainer of a config, with the callbacks every run has."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from odise_pl.callbacks.checkpointing import ResumeCheckpoint, RngState
from odise_pl.callbacks.hparams_table import HParamsTable
from odise_pl.callbacks.nonfinite_loss import NonFiniteLoss
from odise_pl.callbacks.param_summary import ParameterSummary
from odise_pl.callbacks.visualization import PanopticVisualizer
from odise_pl.engine.checkpoints import AtomicCheckpointIO
from odise_pl.engine.quiet import quiet_framework_noise
from odise_pl.engine.scale_out import apply_global_batch, build_strategy


def build_trainer(
    cfg: DictConfig, run_dir: Path, *, extra_callbacks: list | None = None, datamodule=None, extra_plugins: list | None = None
) -> L.Trainer:
    """The Lightning Trainer of ``cfg``; with ``datamodule``, ``data.global_batch_size`` sets its
    per-device batch and the trainer's gradient accumulation (:func:`odise_pl.engine.scale_out.apply_global_batch`)."""
    quiet_framework_noise()
    t = cfg.trainer
    logger = (
        TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        if cfg.logging.tensorboard
        else False
    )
    callbacks: list = [
        ResumeCheckpoint(str(run_dir / "checkpoints"), every_n_steps=int(cfg.checkpoint.every_n_steps)),
        RngState(),
        NonFiniteLoss(t.on_nonfinite, t.max_nonfinite_skips),
        PanopticVisualizer(cfg.logging.num_vis_images, every_n_steps=int(cfg.logging.vis_every_n_steps)),
        ParameterSummary(),
        HParamsTable(),
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks += extra_callbacks or []
    clip = float(cfg.optim.clip_grad_norm)
    trainer = L.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *(extra_plugins or [])],
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(t),
        precision=t.precision,
        max_steps=t.max_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic,
        num_sanity_val_steps=t.num_sanity_val_steps,
        enable_model_summary=False,  # ParameterSummary prints the trainable / frozen table instead
        # no_grad rather than inference_mode: metric states reset under inference mode could not be
        # updated in place by the next validation inside fit (e.g. after an untrained evaluation)
        inference_mode=False,
        gradient_clip_val=clip if clip > 0 else None,
        gradient_clip_algorithm="norm",
    )
    if datamodule is not None:
        apply_global_batch(cfg, trainer, datamodule, run_dir)
    return trainer
