"""Semantic evaluation sets (A-847, PC-459, PC-59, PAS-21): layout, vocabulary, uint16 labels with
255 as a class and ignore 65535, what-to-download errors, and scoring them with the module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.data_modules.semantic import SEMANTIC_SETS, SemanticSegDataModule
from odise_pl.errors import ConfigError, DatasetError

REPO = Path(__file__).resolve().parents[2]


def _write_set(root: Path, name: str, labels: list[np.ndarray]) -> None:
    spec = SEMANTIC_SETS[name]
    (root / spec.image_dir).mkdir(parents=True)
    (root / spec.label_dir).mkdir(parents=True)
    for i, lab in enumerate(labels):
        stem = f"img_{i:04d}"
        image = np.full((*lab.shape, 3), 40 * i, np.uint8)
        Image.fromarray(image).save(root / spec.image_dir / f"{stem}.jpg")
        Image.fromarray(lab).save(root / spec.label_dir / f"{stem}{spec.label_suffix}")


def test_a847_uint16_labels_keep_255_and_ignore_65535(tmp_path):
    lab = np.array([[255, 255, 65535, 846], [0, 1, 2, 3]], np.uint16).repeat(8, 0).repeat(8, 1)
    _write_set(tmp_path, "ade20k_847", [lab, lab[:, ::-1].copy()])
    dm = SemanticSegDataModule(dataset="ade20k_847", root=str(tmp_path), num_workers=0, pin_memory=False, eval_batch_size=2)
    assert dm.num_classes == 847 and dm.ignore_index == 65535
    assert dm.categories[1]["synonyms"] == ["building", "buildings", "edifice", "edifices"]  # *_with_prompt_eng
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape[0] == 2 and batch["images"].shape[-2:] == (1024, 2048)  # 1024 / 2560
    target = batch["targets"][0]
    assert target["gt_semantic"].dtype == torch.int64 and target["gt_semantic"].shape == (16, 32)
    assert target["gt_semantic"].unique().tolist() == [0, 1, 2, 3, 255, 846, 65535]
    assert "gt_panoptic" not in target


def test_missing_set_and_bad_labels_say_what_to_do(tmp_path):
    dm = SemanticSegDataModule(dataset="pascal_voc_21", root=str(tmp_path / "voc"))
    with pytest.raises(DatasetError, match=r"(?s)voc does not exist.*annotations_pascal21/validation.*VOCtrainval"):
        dm.setup("validate")
    with pytest.raises(ConfigError, match="data.dataset='coco' is not one of ade20k_847"):
        SemanticSegDataModule(dataset="coco")
    with pytest.raises(ConfigError, match="evaluation set"):
        SemanticSegDataModule(dataset="pascal_voc_21").setup("fit")

    _write_set(tmp_path / "voc", "pascal_voc_21", [np.array([[0, 21], [255, 3]], np.uint8)])
    dm = SemanticSegDataModule(dataset="pascal_voc_21", root=str(tmp_path / "voc"))
    dm.setup("validate")
    with pytest.raises(DatasetError, match=r"img_0000.png holds the label 21, outside 0..20"):
        dm.datasets["val"][0]


def test_module_scores_a_semantic_set_without_pq(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.data_modules.synthetic_shapes import categories_json
    from odise_pl.models.builder import build_model

    lab = np.zeros((32, 32), np.uint8)
    lab[8:24, 8:24] = 15  # person
    lab[:4] = 255
    _write_set(tmp_path, "pascal_context_59", [lab])
    dm = SemanticSegDataModule(dataset="pascal_context_59", root=str(tmp_path), num_workers=0, pin_memory=False, eval_short_side=32)
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", ["model.mask_generator.num_queries=6", "model.mask_generator.dec_layers=1"])
    train = [dict(c, synonyms=[c["name"]]) for c in categories_json()]
    model = build_model(cfg, train, ignore_index=dm.ignore_index, eval_categories=dm.categories)
    model.eval()
    assert model.val_sem.num_classes == 59
    batch = next(iter(dm.val_dataloader()))
    model.validation_step(batch, 0)
    metrics = model.eval_metrics("val", model.val_pq, model.val_sem)
    assert "val/mIoU" in metrics and "val/mIoU_either_present" in metrics
    assert not any(k.startswith("val/PQ") for k in metrics)  # no panoptic ground truth: no PQ
    assert 0 <= float(metrics["val/mIoU"]) <= 100
