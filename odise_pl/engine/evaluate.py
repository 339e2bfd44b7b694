"""Evaluating a checkpoint: ``odise-pl validate`` / ``test`` (:func:`evaluate`) and ``test --sets`` (:func:`run`).

:func:`evaluate` evaluates a checkpoint on the data of a config; results go to
``eval_<stage>_<n>.json`` in its run directory (never overwritten).

``odise-pl test [-c X.yaml] --ckpt C --sets ...``: one checkpoint on several evaluation sets, one table.

A set is ``config`` (the experiment's own ``data`` section), ``NAME=SET.yaml`` (a set of your own:
a file with a ``data:`` section, ``docs/custom_datasets.md``), or a preset name, optionally with
its dataset folder: ``ade20k_panoptic[=ROOT]``, ``ade20k_847[=ROOT]``, ``pascal_context_459``,
``pascal_context_59``, ``pascal_voc_21`` (see :mod:`odise_pl.data_modules.ade20k` and
:mod:`odise_pl.data_modules.semantic` for the layouts and what to download). For each set the
model gets the set's vocabulary (re-embedded, no retraining), its ignore label, and panoptic /
instance post-processing only where the set has panoptic ground truth, and the experiment's test size
and batch (``data.eval_short_side`` / ``eval_max_long_side`` / ``eval_batch_size``: 1024 / 2560 / 1 in
the reference recipe, as the reference tests every set); then Lightning's test loop runs. ``C`` is a
run directory, a ``.ckpt`` or a ``.safetensors`` file; the training categories travel with it, so only
the sets' own data is read. The rows go to ``test_sets_N.md`` and ``test_sets_N.csv`` in the run
directory (else beside the file; never overwritten) and are printed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from odise_pl.atomic_files import next_free_path, write_new, write_text
from odise_pl.errors import ConfigError
from odise_pl.evaluation_sets import EVALUATION_SETS

__all__ = ["PRESETS", "COLUMNS", "parse_set", "set_datamodule", "evaluate", "evaluate_sets", "format_sets_table", "method_line", "run"]

#: preset name -> data-module keyword arguments
PRESETS: dict[str, dict] = EVALUATION_SETS

#: table columns after ``set`` (``-`` where a set has no such score, e.g. PQ on a semantic set)
COLUMNS = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mask_AP", "mIoU", "mIoU_gt_present", "mIoU_either_present", "pACC")

# the loader settings and the test size follow the experiment's data section (the reference tests every
# set at its COCO test size: short side 1024, long side <= 2560, batch 1)
_SHARED_KEYS = (
    "eval_batch_size",
    "eval_short_side",
    "eval_max_long_side",
    "num_workers",
    "pin_memory",
    "size_divisibility",
    "vocabulary_variant",
)


def parse_set(text: str) -> tuple[str, dict | None]:
    """``"config"`` -> ("config", None); ``"NAME[=ROOT]"`` -> (NAME, data-module kwargs);
    ``"NAME=SET.yaml"`` or ``"SET.yaml"`` (a set of your own, named NAME or the file's stem) -> the
    kwargs of the file's ``data:`` section (:mod:`odise_pl.data_modules.set_file`)."""
    from odise_pl.data_modules.set_file import is_set_file, load_set_file

    name, _, root = text.partition("=")
    if is_set_file(root or name):
        label = name if root else Path(name).stem
        return label, load_set_file(root or name)
    if name == "config":
        return name, None
    if name not in PRESETS:
        raise ConfigError(
            f"--sets {text!r}: unknown set {name!r}; use config or one of {', '.join(PRESETS)} "
            "(optionally NAME=DATASET_FOLDER), or NAME=SET.yaml for a set of your own "
            "(docs/custom_datasets.md)."
        )
    kwargs = dict(PRESETS[name])
    if root:
        kwargs["root"] = root
    return name, kwargs


def set_datamodule(cfg: DictConfig, kwargs: dict | None):
    """The data module of one set: the experiment's own (``kwargs`` None) or a preset's, with the experiment's loader settings."""
    from odise_pl.engine.components import build_datamodule
    from odise_pl.registry import DATA_MODULES

    if kwargs is None:
        return build_datamodule(cfg)
    kwargs = dict(kwargs)
    entry = DATA_MODULES.get(kwargs.pop("name"))
    for key in _SHARED_KEYS:  # loader settings and test size follow the experiment's data section
        if key in cfg.data:
            kwargs.setdefault(key, cfg.data[key])
    return entry.cls.from_config(entry.config(**kwargs))


def evaluate_sets(cfg: DictConfig, ckpt: str, sets: list[str]) -> tuple[list[dict], Path]:
    """Test ``ckpt`` on every set; returns the rows and the folder the tables go to."""
    from odise_pl.engine.results import merge_metrics
    from odise_pl.engine.run_files import output_dir_of, weights_file
    from odise_pl.engine.trainer import build_trainer
    from odise_pl.engine.weights import build_trained
    from odise_pl.models.builder import class_names

    parsed = [parse_set(s) for s in sets]  # all errors before any work
    weights_file(ckpt)  # a missing checkpoint is named before anything is built
    modules = [set_datamodule(cfg, kwargs) for _, kwargs in parsed]
    for dm in modules:
        dm.categories  # noqa: B018 - a bad vocabulary or dataset JSON fails before the checkpoint is read
    model, _ = build_trained(cfg, ckpt)  # the training categories travel with the checkpoint
    out_dir = output_dir_of(ckpt)
    original = model.inference_cfg
    rows = []
    for (label, kwargs), dm in zip(parsed, modules):
        categories = dm.categories
        panoptic = not (kwargs or {}).get("name") == "semantic_seg"
        model.inference_cfg = replace(
            original, panoptic_on=original.panoptic_on and panoptic, instance_on=original.instance_on and panoptic
        )
        model.ignore_index = dm.ignore_index
        model.set_vocabulary([class_names(c) for c in categories], [bool(c.get("isthing")) for c in categories])
        dm.size_divisibility = max(int(getattr(dm, "size_divisibility", 1)), model.backbone.size_divisibility)
        trainer = build_trainer(cfg, out_dir / f"test_sets_{label}")
        metrics = merge_metrics(trainer.test(model, datamodule=dm, verbose=False))
        rows.append({"set": label, "classes": len(categories), **metrics, "test_size": f"{dm.eval_short_side}/{dm.eval_max_long_side}"})
    model.inference_cfg = original
    return rows, out_dir


def method_line(cfg: DictConfig) -> str:
    """The line above a ``--sets`` table: which recipe, and what its ``mIoU`` column averages over."""
    m = cfg.model
    return (
        f"model: {cfg.run.name} ({m.backbone.name} backbone, {m.supervision.name} supervision, "
        f"classifier {m.inference.classifier}); test size per set: short side / max long side; "
        f"mIoU = mIoU_{m.inference.miou_average}"
    )


def format_sets_table(rows: list[dict], method: str | None = None) -> tuple[str, str]:
    """(Markdown, CSV) of the rows: ``set``, ``classes``, :data:`COLUMNS` (1 decimal in Markdown), then
    ``test_size``; the Markdown starts with ``method`` (:func:`method_line`) when given and ends with a
    note naming the mIoU conventions by detectron2 version."""
    from odise_pl.metrics.semantic_iou import miou_footnote

    head = ["set", "classes", *COLUMNS, "test_size"]
    md = ([method, ""] if method else []) + ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in rows:
        values = [row.get(c) for c in COLUMNS]
        md.append(
            f"| {row['set']} | {row['classes']} | "
            + " | ".join("-" if v is None else f"{float(v):.1f}" for v in values)
            + f" | {row.get('test_size', '-')} |"
        )
        cells = ("" if v is None else f"{float(v):.4f}" for v in values)
        writer.writerow([row["set"], row["classes"], *cells, row.get("test_size", "")])
    md += ["", miou_footnote()]
    return "\n".join(md) + "\n", buf.getvalue()


def run(cfg: DictConfig, ckpt: str, sets: list[str]) -> str:
    """Evaluate, write ``test_sets_N.{md,csv}`` beside the checkpoint, return the Markdown table."""
    rows, out_dir = evaluate_sets(cfg, ckpt, sets)
    markdown, table_csv = format_sets_table(rows, method_line(cfg))
    first = next_free_path(out_dir / "test_sets_{n}.md", companions=(".csv",))
    md_path = write_new(first, markdown, companions=(".csv",))
    write_text(md_path.with_suffix(".csv"), table_csv)
    return markdown + f"\nwritten: {md_path} and .csv\n"


def evaluate(cfg: DictConfig, ckpt: str, *, stage: str = "validate") -> dict:
    """Evaluate a checkpoint (run directory, ``.ckpt`` or ``.safetensors``) on the data of ``cfg``.

    Only the evaluation split is read (the training categories travel with the checkpoint). Results
    go to the run directory (else beside the file) as ``eval_<stage>_<n>.json`` (never overwritten).
    """
    from odise_pl.engine.components import build_datamodule
    from odise_pl.engine.results import merge_metrics
    from odise_pl.engine.run_files import output_dir_of, weights_file
    from odise_pl.engine.trainer import build_trainer
    from odise_pl.engine.weights import build_trained

    weights_file(ckpt)  # a missing checkpoint is named before anything is built
    dm = build_datamodule(cfg)
    dm.categories  # noqa: B018 - bad evaluation data fails here, before a large checkpoint is read
    model, _ = build_trained(cfg, ckpt, eval_datamodule=dm)
    out_dir = output_dir_of(ckpt)
    trainer = build_trainer(cfg, out_dir / f"eval_{stage}")
    run = trainer.validate if stage == "validate" else trainer.test
    results = {stage: merge_metrics(run(model, datamodule=dm, verbose=False)), "checkpoint": str(ckpt)}
    write_new(out_dir / f"eval_{stage}_{{n}}.json", json.dumps(results, indent=2))
    return results
