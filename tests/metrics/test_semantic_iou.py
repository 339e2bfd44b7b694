"""SemanticIoU: hand-computed scores, the two averaging conventions, ignore labels,
16-bit labels, and a brute-force cross-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odise_pl.metrics.semantic_iou import (
    AVERAGE_LABELS,
    DEFAULT_AVERAGE,
    SemanticIoU,
    confusion_matrix,
    semantic_scores,
)


def test_hand_computed_scores():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    metric = SemanticIoU(num_classes=3, ignore_index=255)
    metric.update(pred, target)
    out = metric.compute()
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3;
    # class 2: tp 1, gt 2, pred 1 -> 1/2
    iou = [1 / 3, 2 / 3, 1 / 2]
    assert out["IoU"].tolist() == pytest.approx([100 * v for v in iou])
    assert float(out["mIoU"]) == pytest.approx(100 * sum(iou) / 3)
    assert float(out["pACC"]) == pytest.approx(100 * 4 / 6)
    assert float(out["mACC"]) == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)
    assert float(out["fwIoU"]) == pytest.approx(100 * sum(v * 2 / 6 for v in iou))
    assert metric.confmat.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_gt_present_and_either_present_differ():
    # Class 2 is predicted but never in the ground truth; class 3 appears nowhere.
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 2, 1, 1]])
    gt_present = SemanticIoU(4, ignore_index=None, average="gt_present")
    either = SemanticIoU(4, ignore_index=None, average="either_present")
    for metric in (gt_present, either):
        metric.update(pred, target)
    a, b = gt_present.compute(), either.compute()
    assert float(a["mIoU"]) == pytest.approx(100 * (1 / 2 + 1) / 2) and int(a["n"]) == 2
    assert float(b["mIoU"]) == pytest.approx(100 * (1 / 2 + 1 + 0) / 3) and int(b["n"]) == 3
    assert math.isnan(float(a["IoU"][3])) and float(a["IoU"][2]) == 0.0
    assert float(a["fwIoU"]) == pytest.approx(float(b["fwIoU"]))  # weights come from the GT only


def test_ignored_pixels_count_nowhere():
    target = torch.tensor([[0, 255, 255], [1, 255, 1]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 1]])
    metric = SemanticIoU(2, ignore_index=255)
    metric.update(pred, target)
    assert int(metric.confmat.sum()) == 3
    assert float(metric.compute()["mIoU"]) == 100.0


def test_uint16_labels_keep_255_as_a_class():
    k = 847
    target = torch.tensor([[255, 255, 65535, 846], [0, 65535, 255, 846]], dtype=torch.int32)
    pred = torch.tensor([[255, 255, 255, 846], [0, 3, 254, 846]])
    metric = SemanticIoU(k, ignore_index=65535, average="gt_present")
    metric.update(pred, target)
    cm = metric.confmat
    assert cm.shape == (k, k) and int(cm.sum()) == 6
    assert int(cm[255, 255]) == 2 and int(cm[255, 254]) == 1
    out = metric.compute()
    assert int(out["n"]) == 3  # classes 0, 255 and 846
    assert float(out["IoU"][255]) == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError, match="class 65535.*ignore_index is 255"):
        SemanticIoU(k, ignore_index=255).update(pred, target)


def test_batch_update_and_split_states_agree():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (4, 9, 11), generator=gen)
    target[target == 5] = 255
    pred = torch.randint(0, 5, (4, 9, 11), generator=gen)
    batch, first, second = (SemanticIoU(5) for _ in range(3))
    batch.update(pred, target)
    first.update(pred[0], target[0])
    first.update(pred[1], target[1])
    second.update(pred[2:], target[2:])
    assert first._reductions["confmat"].__name__ == "dim_zero_sum"
    assert torch.equal(first.confmat + second.confmat, batch.confmat)
    first.merge_state(second)
    assert float(first.compute()["mIoU"]) == pytest.approx(float(batch.compute()["mIoU"]))


@pytest.mark.parametrize("average", ["gt_present", "either_present"])
def test_matches_a_brute_force_count(average):
    rng = np.random.default_rng(3)
    k, ignore = 12, 255
    target = rng.integers(0, k - 3, size=(3, 20, 30))  # classes k-3.. never in the GT
    target[rng.random(target.shape) < 0.1] = ignore
    noise = rng.integers(0, k, target.shape)
    pred = np.where(rng.random(target.shape) < 0.6, np.clip(target, 0, k - 1), noise)
    metric = SemanticIoU(k, ignore_index=ignore, average=average)
    metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    valid = target != ignore
    ious = []
    for c in range(k):
        inter = np.sum((target == c) & (pred == c) & valid)
        union = np.sum(((target == c) | (pred == c)) & valid)
        in_gt = np.any((target == c) & valid)
        if in_gt if average == "gt_present" else union > 0:
            ious.append(inter / union)
    assert float(metric.compute()["mIoU"]) == pytest.approx(100 * np.mean(ious))
    assert float(metric.compute()["pACC"]) == pytest.approx(100 * np.mean((pred == target)[valid]))


def test_input_errors():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2, None)
    with pytest.raises(ValueError, match="prediction holds the class 7"):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), 2, 255)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(torch.zeros(2), torch.zeros(2, dtype=torch.long), 2, None)
    with pytest.raises(ValueError, match="average"):
        SemanticIoU(3, average="mean")
    empty = semantic_scores(torch.zeros(3, 3, dtype=torch.long))
    assert float(empty["mIoU"]) == 0.0 and int(empty["n"]) == 0


def _detectron2_v06_miou(confmat_gt_rows: np.ndarray) -> float:
    """mIoU as detectron2 v0.6's SemSegEvaluator.evaluate computes it (its matrix: rows = prediction,
    columns = GT): the IoU of GT-present classes summed, divided by the classes in GT or prediction."""
    cm = confmat_gt_rows.T.astype(np.float64)
    tp = cm.diagonal()
    pos_gt, pos_pred = cm.sum(0), cm.sum(1)
    acc_valid = pos_gt > 0
    iou_valid = (pos_gt + pos_pred) > 0
    iou = np.zeros(len(tp))
    iou[acc_valid] = tp[acc_valid] / (pos_gt + pos_pred - tp)[acc_valid]
    return 100 * iou[acc_valid].sum() / iou_valid.sum()


def test_the_default_is_detectron2_v06_on_a_hand_made_confusion_matrix():
    # rows = GT class, columns = prediction (SemanticIoU's layout). Class 0: 8 GT px, 4 right, 1 and 3
    # predicted as classes 1 and 2 -> IoU 4 / 8; class 1: 4 GT px all right, 5 predicted -> 4 / 5;
    # class 2: only predicted (IoU 0: in the v0.6 average, not in the GT-only one); class 3: nowhere.
    confmat = np.array([[4, 1, 3, 0], [0, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    either_by_hand = 100 * (4 / 8 + 4 / 5 + 0) / 3
    gt_by_hand = 100 * (4 / 8 + 4 / 5) / 2
    scores = semantic_scores(torch.from_numpy(confmat))  # the default convention
    assert float(scores["mIoU"]) == pytest.approx(either_by_hand)
    assert either_by_hand == pytest.approx(_detectron2_v06_miou(confmat))
    assert int(scores["n"]) == 3
    gt_only = semantic_scores(torch.from_numpy(confmat), "gt_present")
    assert float(gt_only["mIoU"]) == pytest.approx(gt_by_hand)

    # The Metric: same default, both conventions by name from one matrix.
    pred, target = [], []
    for t in range(4):
        for p in range(4):
            pred += [p] * int(confmat[t, p])
            target += [t] * int(confmat[t, p])
    metric = SemanticIoU(4, ignore_index=None)
    assert metric.average == DEFAULT_AVERAGE == "either_present"
    metric.update(torch.tensor([pred]), torch.tensor([target]))
    out = metric.compute()
    assert metric.confmat.tolist() == confmat.tolist()
    assert float(out["mIoU"]) == float(out["mIoU_either_present"]) == pytest.approx(either_by_hand)
    assert float(out["mIoU_gt_present"]) == pytest.approx(gt_by_hand) != pytest.approx(either_by_hand)
    assert AVERAGE_LABELS["either_present"].startswith("detectron2 v0.6")


def test_the_schema_and_the_reference_recipe_default_to_detectron2_v06():
    from pathlib import Path

    from odise_pl.config.loader import load_config
    from odise_pl.config.schema import InferenceConfig

    assert InferenceConfig().miou_average == "either_present"
    experiments = Path(__file__).parents[2] / "experiments"
    for name in ("base/reference.yaml", "odise_label_coco.yaml", "odise_caption_coco.yaml"):
        cfg = load_config(experiments / name)
        assert cfg.model.inference.miou_average == "either_present", name
