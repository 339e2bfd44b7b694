"""Semantic-segmentation IoU from one dataset-level confusion matrix.

:func:`confusion_matrix` reduces one image (or a batch) with a single bincount;
:func:`semantic_scores` turns the matrix into mIoU, fwIoU, pACC and mACC;
:class:`SemanticIoU` keeps the matrix as a sum-reduced state (exact under DDP).

Which classes the mIoU averages over is explicit, because the two conventions
of detectron2's ``SemSegEvaluator`` change A-847 / PC-459 results by several
points (FC-CLIP's PC-459 moves from 13.8 to 18.2):

* ``"either_present"`` (default; detectron2 **v0.6**, the release ODISE installs,
  with which the reference's mIoU was published): the summed IoU of the classes
  with ground-truth pixels divided by the number of classes present in the
  ground truth *or* in the prediction (a class that is only predicted counts
  with IoU 0);
* ``"gt_present"`` (detectron2 after commit f3c1bc19 of 2022-07-06, in no
  release): classes with at least one ground-truth pixel in the whole dataset.

:data:`AVERAGE_LABELS` names each by detectron2 version, for tables and logs.

mACC always averages over ground-truth-present classes, fwIoU weights by
ground-truth frequency, pACC is the fraction of labelled pixels predicted right.
Pixels whose target equals ``ignore_index`` are dropped; any other target must
be a class 0..K-1, so datasets with 16-bit labels (A-847, PC-459: class 255 is
real, ignore is 65535) only need ``ignore_index=65535``.

Example:
    >>> import torch
    >>> metric = SemanticIoU(num_classes=3, ignore_index=255)
    >>> metric.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [2, 255]]))
    >>> round(float(metric.compute()["mIoU"]), 2)
    50.0
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from odise_pl.config.schema import InferenceConfig, choices_of

__all__ = ["SemanticIoU", "confusion_matrix", "semantic_scores", "AVERAGES", "DEFAULT_AVERAGE", "AVERAGE_LABELS", "miou_footnote"]

AVERAGES = choices_of(InferenceConfig, "miou_average")  # gt_present, either_present
#: the reference's convention (detectron2 v0.6)
DEFAULT_AVERAGE = "either_present"
#: each convention by detectron2 version, as printed beside mIoU
AVERAGE_LABELS = {
    "either_present": "detectron2 v0.6: classes in GT or prediction",
    "gt_present": "detectron2 after f3c1bc19, no release: classes in GT",
}


def miou_footnote() -> str:
    """One line for result tables: what ``mIoU`` and its two named variants average over."""
    return (
        f"mIoU follows model.inference.miou_average (default {DEFAULT_AVERAGE}); "
        + "; ".join(f"mIoU_{name} = {AVERAGE_LABELS[name]}" for name in ("either_present", "gt_present"))
        + "."
    )


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Count (target, prediction) pixel pairs with one bincount.

    Memory: one int64 per labelled pixel plus the (K, K) matrix (5.7 MB for K = 847).

    Args:
        pred: (H, W) or (B, H, W) integer class indices 0..K-1.
        target: same shape, class indices 0..K-1 or ``ignore_index``.
        num_classes: K.
        ignore_index: target value to drop, or None.

    Returns:
        (K, K) int64, rows = target class, columns = predicted class.

    Raises:
        ValueError: shapes differ, or a value is outside 0..K-1 (and not ignored).
    """
    if pred.shape != target.shape:
        raise ValueError(f"Prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
    for name, t in (("prediction", pred), ("target", target)):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"The {name} must hold integer class indices, got {t.dtype}.")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).to(target.device).long()
    if ignore_index is not None:
        keep = target != ignore_index
        target, pred = target[keep], pred[keep]
    k = num_classes
    for name, t in (("target", target), ("prediction", pred)):
        if t.numel() and not (0 <= int(t.min()) and int(t.max()) < k):
            bad = t[(t < 0) | (t >= k)][:1].item()
            hint = f" (ignore_index is {ignore_index})" if name == "target" else ""
            raise ValueError(f"The {name} holds the class {bad}, outside 0..{k - 1}{hint}.")
    return torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)


def semantic_scores(confmat: Tensor, average: str = DEFAULT_AVERAGE) -> dict[str, Tensor]:
    """Scores in percent from a (K, K) confusion matrix (rows = target).

    Args:
        confmat: (K, K) integer counts.
        average: ``"either_present"`` (detectron2 v0.6) or ``"gt_present"`` (see the module
            docstring).

    Returns:
        ``mIoU, fwIoU, pACC, mACC`` float64 scalars; ``IoU`` and ``ACC`` (K,) float64,
        NaN where undefined (IoU: no pixel of the class in target or prediction;
        ACC: none in the target); ``n`` int64 scalar, the classes in the mIoU.
        Empty averages read 0.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}.")
    cm = confmat.double()
    tp = cm.diagonal()
    pos_gt = cm.sum(1)
    pos_pred = cm.sum(0)
    union = pos_gt + pos_pred - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(pos_gt > 0, tp / pos_gt.clamp(min=1), nan)
    in_gt = pos_gt > 0
    used = in_gt if average == "gt_present" else union > 0
    total = pos_gt.sum()

    def mean(values: Tensor, mask: Tensor) -> Tensor:
        return 100 * values[mask].mean() if bool(mask.any()) else tp.new_zeros(())

    return {
        "mIoU": mean(iou, used),
        "fwIoU": 100 * (iou[in_gt] * pos_gt[in_gt]).sum() / total if total > 0 else tp.new_zeros(()),
        "pACC": 100 * tp.sum() / total if total > 0 else tp.new_zeros(()),
        "mACC": mean(acc, in_gt),
        "IoU": 100 * iou,
        "ACC": 100 * acc,
        "n": used.sum(),
    }


class SemanticIoU(Metric):
    """mIoU / fwIoU / pACC / mACC over a dataset-level confusion matrix.

    Args:
        num_classes: K.
        ignore_index: target value to drop (255 for PNG datasets, 65535 for the
            uint16 A-847 / PC-459 labels), or None.
        average: ``"either_present"`` (default, detectron2 v0.6) or ``"gt_present"``:
            the classes the mIoU averages over (see the module docstring).
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255, average: str = DEFAULT_AVERAGE, **kwargs) -> None:
        super().__init__(**kwargs)
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}.")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.average = average
        confmat = torch.zeros(num_classes, num_classes, dtype=torch.long)  # rows: target, columns: prediction
        self.add_state("confmat", confmat, dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one image (H, W) or a batch (B, H, W) of class-index maps."""
        self.confmat += confusion_matrix(pred.to(self.device), target.to(self.device), self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        """See :func:`semantic_scores` (``mIoU`` follows ``average``); plus ``mIoU_gt_present`` and
        ``mIoU_either_present``, both conventions by name, from the same (synchronised) matrix."""
        out = semantic_scores(self.confmat, self.average)
        for average in AVERAGES:
            out[f"mIoU_{average}"] = out["mIoU"] if average == self.average else semantic_scores(self.confmat, average)["mIoU"]
        return out
