"""``odise-pl fit``: train a config where :func:`~odise_pl.engine.run_dirs.resume_point` says, then evaluate."""

from __future__ import annotations

import json
import os

from omegaconf import DictConfig

from odise_pl.callbacks.categories import CategoriesInCheckpoints
from odise_pl.engine.checkpoints import RESUME_MAY_DIFFER, check_config, export_safetensors, read_checkpoint
from odise_pl.engine.components import build_all
from odise_pl.engine.results import merge_metrics, write_results
from odise_pl.engine.run_dirs import RUN_DIR_ENV, launch_rank, resume_point
from odise_pl.engine.run_files import (
    SAFETENSORS_KEY,
    WEIGHTS_FILE,
    categories_payload,
    run_directory_of,
    save_config,
    weights_file,
    write_categories,
)
from odise_pl.engine.trainer import build_trainer
from odise_pl.engine.weights import init_weights
from odise_pl.errors import ConfigError


def fit(
    cfg: DictConfig,
    *,
    evaluate_untrained: bool = False,
    ckpt_path: str | None = None,
    init_from: str | None = None,
    callbacks: list | None = None,
    plugins: list | None = None,
) -> dict:
    """Train ``cfg`` (resuming where :func:`resume_point` says), then evaluate; returns the final metrics.

    ``init_from``: a run directory, ``.ckpt`` or ``.safetensors`` whose weights a new run starts from
    (fine-tuning, :func:`init_weights`); a run that resumes takes its weights from its checkpoint instead.
    ``callbacks`` / ``plugins``: added to the Trainer's (a launcher's preemption handling, e.g.).
    The run directory gets ``config.yaml`` and ``categories.json`` when training starts, and every
    checkpoint and ``weights.safetensors`` carry the categories too (:mod:`odise_pl.engine.run_files`).
    """
    run_dir, resume = resume_point(cfg, ckpt_path)
    if resume is not None:  # refuse a checkpoint of another experiment before building anything
        check_config(read_checkpoint(resume), cfg, resume, ignore=RESUME_MAY_DIFFER)
        print(
            f"resuming from {resume}"
            + (f" (--init-from {init_from} is not used: the checkpoint holds the weights trained since)" if init_from else "")
        )
    elif init_from is not None:
        source = run_directory_of(init_from)
        if source is not None and source.resolve() == run_dir.resolve():
            raise ConfigError(
                f"--init-from {init_from} would fine-tune into its own run directory {run_dir}: "
                "set run.name (or run.version) to a new name."
            )
        weights_file(init_from)  # a missing start point is named before anything is built
    dm, model = build_all(cfg)  # bad data or config fails here, before the run directory exists
    results: dict = {"run_dir": str(run_dir)}
    if resume is None and init_from is not None:
        init_weights(model, init_from)
        results["init_from"] = str(init_from)
        print(f"starting from the weights of {init_from}")
    categories = {"categories": dm.categories, "ignore_index": dm.ignore_index}
    os.environ[RUN_DIR_ENV] = str(run_dir)  # ranks Lightning launches from here write here too
    if launch_rank() == 0:
        save_config(cfg, run_dir)
        write_categories(run_dir, **categories)
    trainer = build_trainer(
        cfg, run_dir, datamodule=dm, extra_plugins=plugins, extra_callbacks=[CategoriesInCheckpoints(**categories), *(callbacks or [])]
    )
    if evaluate_untrained and resume is None:
        results["untrained"] = merge_metrics(trainer.validate(model, datamodule=dm, verbose=False))
    trainer.fit(model, datamodule=dm, ckpt_path=str(resume) if resume is not None else None)
    results["final"] = merge_metrics(trainer.validate(model, datamodule=dm, verbose=False))
    if trainer.global_rank != 0:
        return results
    write_results(run_dir, results)  # first: the metrics are never lost to a failing export
    if cfg.checkpoint.export_safetensors:
        metadata = {"global_step": trainer.global_step, SAFETENSORS_KEY: json.dumps(categories_payload(**categories), ensure_ascii=False)}
        results["weights"] = str(export_safetensors(model, run_dir / WEIGHTS_FILE, metadata))
    return results
