"""One row per run in TensorBoard's HPARAMS view: backbone, parameter counts, final PQ/SQ/RQ/mIoU.

When training starts, the run's TensorBoard events get an hparams session (the run's name; its
``point``, the name without a ``/seed=N`` suffix, which a sweep point's replicates share, and its
``seed``; the backbone and its weights, trainable / frozen parameters in millions).  Its metric columns
are the validation scalars the module logs (``val/PQ``, ...); TensorBoard shows their last
value, i.e. the final evaluation.  Point ``tensorboard --logdir`` at a sweep directory to see
every run of the sweep side by side.  The same row is written as ``hparams.json`` in the run
directory (the sweep summary reads it).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from odise_pl.atomic_files import write_json
from odise_pl.config.sweep import point_of
from odise_pl.models.param_summary import count_parameters

#: metric columns of the hparams view (scalar tags logged by the module)
METRIC_TAGS = ("val/PQ", "val/SQ", "val/RQ", "val/PQ_th", "val/PQ_st", "val/mIoU")
#: backbone keys that say which weights a backbone uses (the first one present is shown)
_WEIGHT_KEYS = ("model_name", "pretrained")


def backbone_weights(config: dict) -> str:
    """What the backbone of a resolved config runs on: its own model / weights, or ``tiny-random``."""
    model = config.get("model", {})
    backbone = model.get("backbone", {})
    if backbone.get("name") == "clip" and not backbone.get("model_name"):
        clip = model.get("clip", {})
        return f"{clip.get('model_name')}/{clip.get('pretrained') or 'random'}"
    if backbone.get("name") == "clip":
        return f"{backbone['model_name']}/{backbone.get('pretrained') or 'random'}"
    if backbone.get("tiny") or backbone.get("pretrained") is None:
        return "tiny-random"
    return str(backbone.get("pretrained"))


def run_hparams(pl_module: torch.nn.Module, config: dict) -> dict:
    """The hparams row of a run: run name, backbone, weights and parameter counts (millions)."""
    parts = torch.nn.Module()
    for name in ("backbone", "mask_generator", "supervision", "open_vocab"):
        if getattr(pl_module, name, None) is not None:
            parts.add_module(name, getattr(pl_module, name))
    rows = count_parameters(parts)
    backbone_rows = [r for r in rows if r.part == "backbone" or r.part.startswith("backbone.")]
    m = 1e6
    run_name = str(config.get("run", {}).get("name", ""))
    return {
        "run": run_name,
        "point": point_of(run_name)[0],  # the replicates of a sweep point (backbone=mae/seed=N) share it
        "seed": int(config.get("seed", 0) or 0),
        "backbone": str(config.get("model", {}).get("backbone", {}).get("name", "")),
        "backbone_weights": backbone_weights(config),
        "params_trainable_M": round(sum(r.trainable for r in rows) / m, 3),
        "params_frozen_M": round(sum(r.frozen for r in rows) / m, 3),
        "backbone_trainable_M": round(sum(r.trainable for r in backbone_rows) / m, 3),
        "backbone_frozen_M": round(sum(r.frozen for r in backbone_rows) / m, 3),
    }


def write_hparams_session(writer, hparams: dict, metric_tags=METRIC_TAGS) -> None:
    """Write TensorBoard's hparams experiment + session summaries with ``writer`` (a ``SummaryWriter``)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    exp, ssi, sei = hparams_summaries(hparams, {tag: 0.0 for tag in metric_tags})
    file_writer = writer._get_file_writer()
    for summary in (exp, ssi, sei):
        file_writer.add_summary(summary)
    file_writer.flush()


class HParamsTable(L.Callback):
    """Write the run's hparams row (TensorBoard + ``hparams.json``) when fitting starts."""

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        config = dict(pl_module.hparams.get("config") or {})
        row = run_hparams(pl_module, config)
        root = Path(trainer.default_root_dir)
        write_json(root / "hparams.json", row)
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "_get_file_writer"):
            write_hparams_session(experiment, row)
