"""ADE20K-150 (A-150) as the reference evaluates it: the DataModule over the files that
``odise-pl data prepare-ade20k`` (:mod:`odise_pl.data_modules.ade20k_prepare`) writes.

Layout under ``data.root`` (default ``datasets/ade/ADEChallengeData2016``, where ODISE registers
``ade20k_panoptic_val``)::

    images/validation/ADE_*.jpg
    ade20k_panoptic_val.json, ade20k_panoptic_val/   the PQ truth (stuff areas from the semantic map,
                                                     as the COCO panoptic API reads them)
    annotations_detectron2/validation/ADE_*.png      the mIoU truth (``gt_semantic``: label - 1,
                                                     unlabeled 255), read as the reference's
                                                     SemSegEvaluator does, not derived from the
                                                     panoptic PNG (they differ on ~2% of pixels)
    ade20k_instance_val.json                         the mask-AP truth of the reference

Mask AP here takes its ground-truth instances from the panoptic thing segments (as on COCO),
not from ``ade20k_instance_val.json``; the preparation writes both from the same instance map,
so they hold the same masks and classes (checked by the tests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from odise_pl.data_modules.ade20k_prepare import (
    DEFAULT_ROOT,
    DOWNLOAD_HINT,
    ade20k_150_categories,
    prepare_ade20k,
    read_catid_mapping,
)
from odise_pl.data_modules.coco_panoptic import CocoPanopticConfig, CocoPanopticDataModule
from odise_pl.registry import DATA_MODULES

__all__ = [
    "ADE20KPanopticConfig",
    "ADE20KPanopticDataModule",
    "prepare_ade20k",
    "ade20k_150_categories",
    "read_catid_mapping",
    "DOWNLOAD_HINT",
]


@dataclass
class ADE20KPanopticConfig(CocoPanopticConfig):
    """``data: {name: ade20k_panoptic}``: ADE20K-150 after ``odise-pl data prepare-ade20k``.

    Evaluation as ODISE's ``ade150_open_eval`` (``configs/common/data/pano_open_d2_eval.py``): short side
    1024, long side at most 2560, batch 1, the ``ade20k_150_with_prompt_eng`` names (Mask2Former's own
    ADE20K evaluation uses 640).
    ``*_semantic_dir``: the semantic ground truth of mIoU (null: derived from the panoptic PNG).
    """

    root: str = DEFAULT_ROOT
    train_json: str = "ade20k_panoptic_train.json"
    train_image_dir: str = "images/training"
    train_panoptic_dir: str = "ade20k_panoptic_train"
    train_semantic_dir: str | None = "annotations_detectron2/training"
    val_json: str = "ade20k_panoptic_val.json"
    val_image_dir: str = "images/validation"
    val_panoptic_dir: str = "ade20k_panoptic_val"
    val_semantic_dir: str | None = "annotations_detectron2/validation"
    crop_size: int = 640
    eval_short_side: int = 1024
    eval_max_long_side: int = 2560
    vocabulary: str = "ade20k_150_with_prompt_eng"


@DATA_MODULES.register("ade20k_panoptic", config=ADE20KPanopticConfig)
class ADE20KPanopticDataModule(CocoPanopticDataModule):
    """:class:`CocoPanopticDataModule` on prepared ADE20K-150; says what to download when absent."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**asdict(ADE20KPanopticConfig(**kwargs)))  # the ADE defaults, not COCO's

    def expected_layout(self) -> str:
        return f"{super().expected_layout()}\n{DOWNLOAD_HINT}"
