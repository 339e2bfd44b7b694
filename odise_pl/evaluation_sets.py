"""``odise-pl test [-c X.yaml] --ckpt C --sets ...``: one checkpoint on several evaluation sets, one table.

A set is ``config`` (the experiment's own ``data`` section), or a preset name, optionally with
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
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from odise_pl.errors import ConfigError

__all__ = ["PRESETS", "COLUMNS", "parse_set", "evaluate_sets", "format_sets_table"]

#: preset name -> data-module keyword arguments
PRESETS: dict[str, dict] = {
    "ade20k_panoptic": {"name": "ade20k_panoptic"},
    "ade20k_847": {"name": "semantic_seg", "dataset": "ade20k_847"},
    "pascal_context_459": {"name": "semantic_seg", "dataset": "pascal_context_459"},
    "pascal_context_59": {"name": "semantic_seg", "dataset": "pascal_context_59"},
    "pascal_voc_21": {"name": "semantic_seg", "dataset": "pascal_voc_21"},
}

#: table columns after ``set`` (``-`` where a set has no such score, e.g. PQ on a semantic set)
COLUMNS = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mask_AP", "mIoU", "mIoU_gt_present", "mIoU_either_present",
           "pACC")

# the loader settings and the test size follow the experiment's data section (the reference tests every
# set at its COCO test size: short side 1024, long side <= 2560, batch 1)
_SHARED_KEYS = ("eval_batch_size", "eval_short_side", "eval_max_long_side", "num_workers", "pin_memory",
                "size_divisibility")


def parse_set(text: str) -> tuple[str, dict | None]:
    """``"config"`` -> ("config", None); ``"NAME[=ROOT]"`` -> (NAME, data-module kwargs)."""
    name, _, root = text.partition("=")
    if name == "config":
        return name, None
    if name not in PRESETS:
        raise ConfigError(f"--sets {text!r}: unknown set {name!r}; use config or one of {', '.join(PRESETS)} "
                          "(optionally NAME=DATASET_FOLDER).")
    kwargs = dict(PRESETS[name])
    if root:
        kwargs["root"] = root
    return name, kwargs


def _datamodule(cfg: DictConfig, kwargs: dict | None):
    from odise_pl.runner import build_datamodule
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
    from odise_pl.models.builder import class_names
    from odise_pl.run_directory import output_dir_of, weights_file
    from odise_pl.runner import build_trained, build_trainer, merge_metrics

    parsed = [parse_set(s) for s in sets]  # all errors before any work
    weights_file(ckpt)  # a missing checkpoint is named before anything is built
    model, _ = build_trained(cfg, ckpt)  # the training categories travel with the checkpoint
    out_dir = output_dir_of(ckpt)
    original = model.inference_cfg
    rows = []
    for label, kwargs in parsed:
        dm = _datamodule(cfg, kwargs)
        categories = dm.categories
        panoptic = not (kwargs or {}).get("name") == "semantic_seg"
        model.inference_cfg = replace(original, panoptic_on=original.panoptic_on and panoptic,
                                      instance_on=original.instance_on and panoptic)
        model.ignore_index = dm.ignore_index
        model.set_vocabulary([class_names(c) for c in categories],
                             [bool(c.get("isthing")) for c in categories])
        dm.size_divisibility = max(int(getattr(dm, "size_divisibility", 1)), model.backbone.size_divisibility)
        trainer = build_trainer(cfg, out_dir / f"test_sets_{label}")
        metrics = merge_metrics(trainer.test(model, datamodule=dm, verbose=False))
        rows.append({"set": label, "classes": len(categories), **metrics})
    model.inference_cfg = original
    return rows, out_dir


def format_sets_table(rows: list[dict]) -> tuple[str, str]:
    """(Markdown, CSV) of the rows: ``set``, ``classes``, then :data:`COLUMNS` (1 decimal in Markdown);
    the Markdown ends with a note naming the mIoU conventions by detectron2 version."""
    from odise_pl.metrics.semantic_iou import miou_footnote

    head = ["set", "classes", *COLUMNS]
    md = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in rows:
        values = [row.get(c) for c in COLUMNS]
        md.append(f"| {row['set']} | {row['classes']} | "
                  + " | ".join("-" if v is None else f"{float(v):.1f}" for v in values) + " |")
        cells = ("" if v is None else f"{float(v):.4f}" for v in values)
        writer.writerow([row["set"], row["classes"], *cells])
    md += ["", miou_footnote()]
    return "\n".join(md) + "\n", buf.getvalue()


def run(cfg: DictConfig, ckpt: str, sets: list[str]) -> str:
    """Evaluate, write ``test_sets_N.{md,csv}`` beside the checkpoint, return the Markdown table."""
    rows, out_dir = evaluate_sets(cfg, ckpt, sets)
    markdown, table_csv = format_sets_table(rows)
    n = 0
    while (out_dir / f"test_sets_{n}.md").exists() or (out_dir / f"test_sets_{n}.csv").exists():
        n += 1
    (out_dir / f"test_sets_{n}.md").write_text(markdown)
    (out_dir / f"test_sets_{n}.csv").write_text(table_csv)
    return markdown + f"\nwritten: {out_dir / f'test_sets_{n}.md'} and .csv\n"
