"""Run directories, trainer construction, and the fit / validate / test entry points."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from odise_pl.callbacks.hparams_table import HParamsTable
from odise_pl.callbacks.param_summary import ParameterSummary
from odise_pl.callbacks.visualization import PanopticVisualizer
from odise_pl.errors import ConfigError
from odise_pl.models.builder import build_model, section_to_dataclass
from odise_pl.registry import DATA_MODULES

_VERSION = re.compile(r"^version_(\d+)$")


def run_dir_for(cfg: DictConfig, *, fresh: bool = True) -> Path:
    """``ROOT/NAME/VERSION``: with ``version: null`` the next free ``version_N`` (never an existing one)."""
    base = Path(cfg.run.root) / cfg.run.name
    if cfg.run.version:
        return base / str(cfg.run.version)
    taken = [int(m.group(1)) for p in base.glob("version_*") if (m := _VERSION.match(p.name))]
    return base / f"version_{max(taken, default=-1) + 1}"


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write the resolved config; an existing one is kept (numbered copies), never overwritten."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    n = 1
    while path.exists():
        path = run_dir / f"config.{n}.yaml"
        n += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)


def build_datamodule(cfg: DictConfig):
    entry = DATA_MODULES.get(cfg.data.name)
    return entry.cls.from_config(section_to_dataclass(cfg.data, entry.config))


def build_trainer(cfg: DictConfig, run_dir: Path, *, extra_callbacks: list | None = None) -> L.Trainer:
    t = cfg.trainer
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                               default_hp_metric=False) if cfg.logging.tensorboard else False
    callbacks: list = [
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0,
                        every_n_train_steps=None),
        PanopticVisualizer(cfg.logging.num_vis_images),
        ParameterSummary(),
        HParamsTable(),
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks += extra_callbacks or []
    clip = float(cfg.optim.clip_grad_norm)
    return L.Trainer(
        default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, max_steps=t.max_steps, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch, limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps, accumulate_grad_batches=t.accumulate_grad_batches,
        enable_progress_bar=t.enable_progress_bar, deterministic=t.deterministic,
        num_sanity_val_steps=t.num_sanity_val_steps,
        # no_grad rather than inference_mode: metric states reset under inference mode could not be
        # updated in place by the next validation inside fit (e.g. after an untrained evaluation)
        inference_mode=False,
        gradient_clip_val=clip if clip > 0 else None, gradient_clip_algorithm="norm",
    )


def build_all(cfg: DictConfig):
    """The data module and the model for ``cfg``."""
    L.seed_everything(int(cfg.seed), workers=True)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm.categories, ignore_index=dm.ignore_index)
    dm.size_divisibility = max(int(getattr(dm, "size_divisibility", 1)), model.backbone.size_divisibility)
    return dm, model


def fit(cfg: DictConfig, *, evaluate_untrained: bool = False, ckpt_path: str | None = None) -> dict:
    """Train ``cfg`` in a new run directory, then evaluate; returns the final metrics."""
    run_dir = run_dir_for(cfg)
    if run_dir.exists() and any(run_dir.iterdir()) and ckpt_path is None:
        raise ConfigError(f"run directory {run_dir} already exists: set run.version to a new name, "
                          f"or leave it null for the next free version")
    dm, model = build_all(cfg)   # bad data or config fails here, before the run directory exists
    save_config(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir)
    results: dict = {"run_dir": str(run_dir)}
    if evaluate_untrained:
        results["untrained"] = _metrics(trainer.validate(model, datamodule=dm, verbose=False))
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    results["final"] = _metrics(trainer.validate(model, datamodule=dm, verbose=False))
    write_results(run_dir, results)
    return results


def _metrics(out: list[dict]) -> dict:
    merged: dict = {}
    for d in out:
        merged.update({k.split("/", 1)[-1]: float(v) for k, v in d.items()})
    return merged


def write_results(run_dir: Path, results: dict) -> None:
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, run_dir / "metrics.json")
    (run_dir / "metrics.md").write_text(format_table(results))


def format_table(results: dict) -> str:
    """Markdown table of PQ/SQ/RQ (All/Things/Stuff) and mIoU for each evaluated stage."""
    cols = ["PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU"]
    rows = [(k, v) for k, v in results.items() if isinstance(v, dict)]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.1f}" if c in m else "-" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def load_checkpoint(model: torch.nn.Module, path: str) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])


def evaluate(cfg: DictConfig, ckpt: str, *, stage: str = "validate") -> dict:
    """Evaluate a checkpoint; results go beside it as ``eval_<stage>_<n>.json`` (never overwritten)."""
    ckpt_path = Path(ckpt)
    if not ckpt_path.is_file():
        raise ConfigError(f"checkpoint '{ckpt}' not found")
    dm, model = build_all(cfg)
    load_checkpoint(model, str(ckpt_path))
    out_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    trainer = build_trainer(cfg, out_dir / f"eval_{stage}")
    run = trainer.validate if stage == "validate" else trainer.test
    results = {stage: _metrics(run(model, datamodule=dm, verbose=False)), "checkpoint": str(ckpt_path)}
    n = 0
    while (out_dir / f"eval_{stage}_{n}.json").exists():
        n += 1
    tmp = out_dir / f"eval_{stage}_{n}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out_dir / f"eval_{stage}_{n}.json")
    return results
