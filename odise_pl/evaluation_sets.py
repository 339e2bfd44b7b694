"""The evaluation sets, in one table: the semantic sets' layouts and vocabularies (read by
:mod:`odise_pl.data_modules.semantic`) and the names ``odise-pl test --sets`` accepts (:data:`EVALUATION_SETS`,
read by :mod:`odise_pl.engine.evaluate` and the CLI's help). A leaf module: no torch, cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SemanticSetSpec", "SEMANTIC_SETS", "EVALUATION_SETS"]


@dataclass(frozen=True)
class SemanticSetSpec:
    """Where a set lives by default, its label format and what to download."""

    root: str
    image_dir: str
    label_dir: str
    label_suffix: str
    ignore_index: int
    vocabulary: str
    download: str


SEMANTIC_SETS = {
    "ade20k_847": SemanticSetSpec(
        "datasets/ade/ADE20K_2021_17_01",
        "images_detectron2/validation",
        "annotations_detectron2/validation",
        ".tif",
        65535,
        "ade20k_847_with_prompt_eng",
        "A-847 is the full ADE20K (ADE20K_2021_17_01.zip from the ADE20K site, groups.csail.mit.edu/vision/"
        "datasets/ADE20K), converted to uint16 TIFF labels by detectron2/ODISE's "
        "datasets/prepare_ade20k_full_sem_seg.py",
    ),
    "pascal_context_459": SemanticSetSpec(
        "datasets/pascal_ctx_d2",
        "images/validation",
        "annotations_ctx459/validation",
        ".tif",
        65535,
        "pascal_context_459_with_prompt_eng",
        "PC-459 is PASCAL Context (VOC2010 images + trainval_merged.json / the 459-class .mat labels from "
        "cs.stanford.edu/~roozbeh/pascal-context), converted by ODISE's "
        "datasets/prepare_pascal_ctx_full_sem_seg.py",
    ),
    "pascal_context_59": SemanticSetSpec(
        "datasets/pascal_ctx_d2",
        "images/validation",
        "annotations_ctx59/validation",
        ".png",
        255,
        "pascal_context_59_with_prompt_eng",
        "PC-59 is PASCAL Context (VOC2010 images + the 59-class labels), converted by ODISE's datasets/prepare_pascal_ctx_sem_seg.py",
    ),
    "pascal_voc_21": SemanticSetSpec(
        "datasets/pascal_voc_d2",
        "images/validation",
        "annotations_pascal21/validation",
        ".png",
        255,
        "pascal_voc_21_with_prompt_eng",
        "PAS-21 is PASCAL VOC 2012 (VOCtrainval_11-May-2012.tar, host.robots.ox.ac.uk/pascal/VOC/voc2012) "
        "with its SegmentationClass labels, converted by ODISE's datasets/prepare_voc_sem_seg.py",
    ),
    # your own set: these are only defaults (docs/custom_datasets.md); the vocabulary is a file under root
    "custom": SemanticSetSpec(
        ".",
        "images",
        "labels",
        ".png",
        255,
        "vocabulary.txt",
        "a set of your own: label images of class indices (0 = the vocabulary file's first class) named "
        "like the images; see docs/custom_datasets.md",
    ),
}


#: ``--sets`` name -> data-module keyword arguments (the panoptic set, then every semantic set)
EVALUATION_SETS: dict[str, dict] = {
    "ade20k_panoptic": {"name": "ade20k_panoptic"},
    **{name: {"name": "semantic_seg", "dataset": name} for name in SEMANTIC_SETS if name != "custom"},
}
