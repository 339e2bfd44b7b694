"""Trained weights into a model: evaluating a checkpoint, fine-tuning from one, a trained model of a config."""

from __future__ import annotations

import os

import lightning as L
import torch
from omegaconf import DictConfig

from odise_pl.engine.checkpoints import (
    EVALUATE_MUST_MATCH,
    TRAINING_ONLY_KEYS,
    check_config,
    load_weights,
    read_checkpoint,
    read_safetensors,
)
from odise_pl.engine.components import build_datamodule
from odise_pl.engine.run_files import saved_config, training_categories, weights_file
from odise_pl.models.builder import build_model


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, ckpt: dict | None = None, *, action: str = "evaluate it") -> None:
    """Load a run directory, a ``.ckpt`` (``weights_only``) or a ``.safetensors`` file into ``model``.

    A checkpoint of another architecture is refused: the ``model.*`` keys of
    :data:`~odise_pl.engine.checkpoints.EVALUATE_MUST_MATCH` (training-only keys aside) are compared with the
    config it was trained with (a ``.ckpt``'s own; the run's ``config.yaml`` for a run directory or a
    ``.safetensors`` in one). ``ckpt``: the checkpoint dict already read from ``path``.
    """
    weights = weights_file(path)
    if ckpt is None:
        ckpt = read_safetensors(weights) if weights.suffix == ".safetensors" else read_checkpoint(weights)
    saved, _ = saved_config(path, ckpt)
    current = (getattr(model, "hparams", None) or {}).get("config")
    if saved and current:
        check_config(
            {"hyper_parameters": {"config": saved}}, current, path, only=EVALUATE_MUST_MATCH, ignore=TRAINING_ONLY_KEYS, action=action
        )
    load_weights(model, weights, ckpt)


def init_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Fine-tuning start: the weights of ``path`` (run directory, ``.ckpt``, ``.safetensors``) into ``model``.

    Only weights are taken (no optimizer, step or loader position: that is ``--resume``). Buffers whose
    shape follows the number of training classes (the no-object class weight of the criterion) keep
    ``model``'s own, so the new training set may have other categories; every parameter must fit.
    """
    weights = weights_file(path)
    ckpt = read_safetensors(weights) if weights.suffix == ".safetensors" else read_checkpoint(weights)
    own = dict(model.named_buffers())
    state = ckpt["state_dict"]
    for key, value in list(state.items()):
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            state[key] = own[key]
    load_checkpoint(model, path, ckpt, action="start from it")


def build_trained(cfg: DictConfig, ckpt: str | os.PathLike, *, eval_datamodule=None) -> tuple[torch.nn.Module, list[dict]]:
    """The model of ``cfg`` with the weights of ``ckpt`` (run directory, ``.ckpt`` or ``.safetensors``).

    Its training categories are those that travel with ``ckpt``
    (:func:`odise_pl.engine.run_files.training_categories`): no data module is built for them. Only a
    checkpoint without them (written before they were saved) falls back to the data module of ``cfg``.
    With ``eval_datamodule``, the model evaluates on that module's categories and ignore label.

    Returns:
        The model (weights loaded) and its training categories.
    """
    weights = weights_file(ckpt)
    ckpt_dict = None if weights.suffix == ".safetensors" else read_checkpoint(weights)
    found = training_categories(ckpt, ckpt_dict)
    L.seed_everything(int(cfg.seed), workers=True)
    if found is not None:
        categories, ignore_index = found.categories, found.ignore_index
    else:
        dm = eval_datamodule if eval_datamodule is not None else build_datamodule(cfg)
        categories, ignore_index = dm.categories, dm.ignore_index
    eval_categories = None
    if eval_datamodule is not None:
        eval_categories, ignore_index = eval_datamodule.categories, eval_datamodule.ignore_index
    model = build_model(cfg, categories, ignore_index=255 if ignore_index is None else int(ignore_index), eval_categories=eval_categories)
    load_checkpoint(model, ckpt, ckpt_dict)
    if eval_datamodule is not None:
        eval_datamodule.size_divisibility = max(int(getattr(eval_datamodule, "size_divisibility", 1)), model.backbone.size_divisibility)
    return model, categories
