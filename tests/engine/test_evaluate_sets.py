"""`odise-pl test --sets`: one checkpoint on the experiment's own panoptic set and a semantic set
(PAS-21 layout), one Markdown + CSV table beside the checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odise_pl.cli import main
from odise_pl.data_modules.semantic import SEMANTIC_SETS
from odise_pl.engine.evaluate import format_sets_table, parse_set
from odise_pl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_sets_table_has_pq_only_for_panoptic_sets(tmp_path, capsys):
    from odise_pl.config import load_config
    from odise_pl.engine.checkpoints import export_safetensors
    from odise_pl.engine.components import build_all

    overrides = [
        f"data.root={tmp_path / 'synth'}",
        "data.num_train=2",
        "data.num_val=2",
        "data.image_size=64",
        "data.crop_size=64",
        "data.eval_short_side=64",
        "data.eval_max_long_side=64",
        "data.num_workers=0",
        "data.eval_batch_size=2",
        "model.mask_generator.num_queries=6",
        "model.mask_generator.dec_layers=1",
        f"run.root={tmp_path / 'runs'}",
        "logging.tensorboard=false",
    ]
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", overrides)
    dm, model = build_all(cfg)
    ckpt = export_safetensors(model, tmp_path / "w" / "weights.safetensors")

    spec = SEMANTIC_SETS["pascal_voc_21"]
    voc = tmp_path / "voc"
    for sub in (spec.image_dir, spec.label_dir):
        (voc / sub).mkdir(parents=True)
    lab = np.zeros((40, 48), np.uint8)
    lab[10:30, 10:30], lab[:2] = 15, 255
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(voc / spec.image_dir / "2007_000033.jpg")
    Image.fromarray(lab).save(voc / spec.label_dir / "2007_000033.png")

    capsys.readouterr()
    assert (
        main(
            [
                "test",
                "-c",
                str(REPO / "experiments" / "quickstart.yaml"),
                *overrides,
                "--ckpt",
                str(ckpt),
                "--sets",
                "config",
                f"pascal_voc_21={voc}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| set | classes | PQ |" in out
    rows = list(csv.DictReader((tmp_path / "w" / "test_sets_0.csv").open()))
    assert [r["set"] for r in rows] == ["config", "pascal_voc_21"] and rows[1]["classes"] == "21"
    assert rows[0]["PQ"] != "" and rows[1]["PQ"] == ""  # no panoptic ground truth in PAS-21
    assert all(0 <= float(r["mIoU"]) <= 100 for r in rows)
    md = (tmp_path / "w" / "test_sets_0.md").read_text()
    assert md.count("\n") == 8 and md.splitlines()[-1].startswith("mIoU follows model.inference.miou_average")
    # the method, its test size per set and its mIoU convention are named (issue #23)
    assert md.startswith("model: ") and md.splitlines()[0].endswith("mIoU = mIoU_either_present")
    assert [r["test_size"] for r in rows] == ["64/64", "64/64"] and "| 64/64 |" in md
    assert "mIoU_either_present = detectron2 v0.6: classes in GT or prediction" in md


def test_set_names_and_table_format():
    expected = {"name": "semantic_seg", "dataset": "ade20k_847", "root": "/data/ade"}
    assert parse_set("ade20k_847=/data/ade") == ("ade20k_847", expected)
    with pytest.raises(ConfigError, match="unknown set 'coco'"):
        parse_set("coco")
    md, table = format_sets_table([{"set": "a", "classes": 3, "PQ": 12.345, "mIoU": 50.0}])
    assert "| a | 3 | 12.3 | - |" in md and table.splitlines()[1].startswith("a,3,12.3450,,")


@pytest.mark.parametrize("preset", ["ade20k_panoptic", "ade20k_847", "pascal_context_459", "pascal_context_59", "pascal_voc_21"])
def test_every_set_is_tested_at_the_experiments_test_size(preset):
    """The reference tests every set at short side 1024, long side <= 2560, batch 1 (pano_open_d2_eval.py)."""
    from odise_pl.config import load_config
    from odise_pl.engine import evaluate as evaluation_sets

    cfg = load_config(REPO / "experiments" / "odise_label_coco.yaml")
    dm = evaluation_sets.set_datamodule(cfg, parse_set(preset)[1])
    assert (dm.eval_short_side, dm.eval_max_long_side, dm.eval_batch_size) == (1024, 2560, 1)
    assert dm.vocabulary.endswith("_with_prompt_eng")
    small = load_config(
        REPO / "experiments" / "odise_label_coco.yaml", ["data.eval_short_side=64", "data.eval_max_long_side=96", "data.eval_batch_size=2"]
    )
    dm = evaluation_sets.set_datamodule(small, parse_set(preset)[1])
    assert (dm.eval_short_side, dm.eval_max_long_side, dm.eval_batch_size) == (64, 96, 2)
