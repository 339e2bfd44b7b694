"""The reference's vocabularies through the data modules: COCO prompt-engineered training names, every
evaluation set's ``*_with_prompt_eng`` list, and the seen / unseen split they give (ODISE_REFERENCE.md)."""

import json

import pytest

from odise_pl.data_modules.ade20k import ADE20KPanopticDataModule, ade20k_150_categories
from odise_pl.data_modules.coco_panoptic import CocoPanopticDataModule
from odise_pl.data_modules.semantic import SemanticSegDataModule
from odise_pl.models.builder import class_names
from odise_pl.models.open_vocab.ensemble import seen_class_mask
from odise_pl.vocab import load_builtin


def _coco_json_categories() -> list[dict]:
    """COCO panoptic's 133 categories as its JSON lists them (ids 1..200 with gaps, plain names)."""
    plain = load_builtin("coco_panoptic")
    return [{"id": c.source_id, "name": c.name, "isthing": int(bool(c.is_thing))} for c in plain]


@pytest.fixture()
def coco_train_names(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "panoptic_val2017.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": _coco_json_categories()})
    )
    dm = CocoPanopticDataModule(root=str(tmp_path / "coco"), vocabulary="coco_panoptic_with_prompt_eng")
    return [class_names(c) for c in dm.categories]


def test_training_names_are_the_prompt_engineered_coco_list_in_file_order(coco_train_names):
    vocab = load_builtin("coco_panoptic_with_prompt_eng")
    assert len(coco_train_names) == 133 and sum(map(len, coco_train_names)) == 254
    assert coco_train_names == vocab.synonyms  # class order: the dataset's; names: the file's, in order
    assert coco_train_names[0][:3] == ["person", "child", "girl"]


@pytest.mark.parametrize(
    "dataset,seen", [("ade20k_150", 64), ("pascal_context_59", 51), ("pascal_voc_21", 21), ("ade20k_847", 101), ("pascal_context_459", 85)]
)
def test_seen_classes_of_every_evaluation_set(tmp_path, coco_train_names, dataset, seen):
    if dataset == "ade20k_150":
        (tmp_path / "ade").mkdir()
        (tmp_path / "ade" / "ade20k_panoptic_val.json").write_text(
            json.dumps({"images": [], "annotations": [], "categories": ade20k_150_categories()})
        )
        dm = ADE20KPanopticDataModule(root=str(tmp_path / "ade"))
    else:
        dm = SemanticSegDataModule(dataset=dataset)
    assert dm.vocabulary == f"{dataset}_with_prompt_eng"  # the default of every set
    names = [class_names(c) for c in dm.categories]
    assert names == load_builtin(f"{dataset}_with_prompt_eng").synonyms
    split = seen_class_mask(names, coco_train_names)
    assert (split.num_seen, split.num_seen + split.num_unseen) == (seen, len(names))
