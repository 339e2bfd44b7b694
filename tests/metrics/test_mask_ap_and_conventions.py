"""Mask AP via torchmetrics (COCO's evaluator) and the named mIoU conventions in the LightningModule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from odise_pl.errors import ConfigError
from odise_pl.metrics.mask_ap import mask_ap_metric, panoptic_to_instances, summarize_mask_ap

REPO = Path(__file__).resolve().parents[2]


def _scene():
    gt = torch.zeros(20, 20, dtype=torch.long)
    gt[:10, :10], gt[10:, 10:], gt[:5, 15:], gt[15:, :5] = 1, 2, 3, 4
    segs = [
        {"id": 1, "category": 0, "iscrowd": 0},
        {"id": 2, "category": 0, "iscrowd": 0},
        {"id": 3, "category": 1, "iscrowd": 0},  # stuff: not an instance
        {"id": 4, "category": 0, "iscrowd": 1},
        {"id": 9, "category": 0, "iscrowd": 0},
    ]  # 9: no pixel
    return gt, segs, torch.tensor([True, False])


def test_things_become_instances_crowd_flagged_and_empty_dropped():
    gt, segs, is_thing = _scene()
    t = panoptic_to_instances(gt, segs, is_thing)
    assert t["labels"].tolist() == [0, 0, 0] and t["iscrowd"].tolist() == [0, 0, 1]
    assert t["masks"].dtype == torch.bool and t["masks"].flatten(1).sum(1).tolist() == [100, 100, 25]


def test_perfect_and_half_recall_give_the_coco_values():
    gt, segs, is_thing = _scene()
    target = panoptic_to_instances(gt, segs, is_thing)
    real = target["iscrowd"] == 0
    perfect = {"masks": target["masks"][real], "scores": torch.tensor([0.9, 0.8]), "labels": target["labels"][real]}
    metric = mask_ap_metric()
    metric.update([perfect], [target])
    assert summarize_mask_ap(metric.compute())["mask_AP"] == pytest.approx(100)

    # One of the two instances found (plus a detection on the crowd region, which COCO ignores):
    # precision 1 up to recall 0.5, nothing after -> 51 of the 101 recall points.
    half = {"masks": target["masks"][[0, 2]], "scores": torch.tensor([0.9, 0.95]), "labels": torch.tensor([0, 0])}
    metric = mask_ap_metric()
    metric.update([half], [target])
    scores = summarize_mask_ap(metric.compute())
    assert scores["mask_AP"] == pytest.approx(100 * 51 / 101, abs=1e-4)
    assert scores["mask_AP50"] == pytest.approx(100 * 51 / 101, abs=1e-4)


def _tiny_module(overrides):
    from odise_pl.config import load_config
    from odise_pl.data_modules.synthetic_shapes import categories_json
    from odise_pl.models.builder import build_model

    cfg = load_config(
        REPO / "experiments" / "quickstart.yaml", ["model.mask_generator.num_queries=6", "model.mask_generator.dec_layers=1", *overrides]
    )
    cats = [dict(c, synonyms=[c["name"]]) for c in categories_json()]
    return build_model(cfg, cats), cats


def test_module_names_both_miou_conventions_and_reports_mask_ap():
    model, cats = _tiny_module(["model.inference.instance_on=true", "model.inference.miou_average=either_present"])
    assert model.val_sem.average == "either_present" and model.val_ap is not None
    model.eval()
    gt = torch.zeros(32, 32, dtype=torch.long)
    thing = next(i for i, c in enumerate(cats) if c["isthing"])
    gt[4:20, 4:20] = 5
    semantic = torch.full((32, 32), 255, dtype=torch.long)
    semantic[4:20, 4:20] = thing
    batch = {
        "images": torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8),
        "image_sizes": torch.tensor([[32, 32]]),
        "targets": [
            {
                "orig_size": (32, 32),
                "gt_panoptic": gt,
                "gt_semantic": semantic,
                "gt_segments": [{"id": 5, "category": thing, "iscrowd": 0, "isthing": True}],
            }
        ],
    }
    model.validation_step(batch, 0)
    metrics = model.eval_metrics("val", model.val_pq, model.val_sem, model.val_ap)
    for key in ("val/PQ", "val/mIoU", "val/mIoU_gt_present", "val/mIoU_either_present", "val/mask_AP", "val/mask_AP50"):
        assert key in metrics, key
    assert float(metrics["val/mIoU"]) == float(metrics["val/mIoU_either_present"])
    # one GT class: gt_present averages one IoU; either_present also every predicted-only class (IoU 0)
    assert float(metrics["val/mIoU_gt_present"]) >= float(metrics["val/mIoU_either_present"])
    assert 0 <= float(metrics["val/mask_AP"]) <= 100
    assert int(model.val_sem.confmat.sum()) == 0 and not model.val_ap.detection_scores  # states reset


def test_unknown_miou_convention_is_a_config_error():
    with pytest.raises(ConfigError, match="'model.inference.miou_average' must be one of gt_present, either_present, got 'gt'"):
        _tiny_module(["model.inference.miou_average=gt"])  # at load time, before the model is built
