"""The batch contract (DESIGN.md, docs/architecture.md "Data batches"), checked for every registered
data module on tiny generated data (the ``MetricTester`` habit).

A new data module registers, then adds to ``TINY`` a function writing a few images in its layout and
returning its YAML section; the test that every registered name has one fails until it does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.models.builder import section_to_dataclass
from odise_pl.registry import DATA_MODULES

SMALL = {
    "num_workers": 0,
    "pin_memory": False,
    "batch_size": 2,
    "eval_batch_size": 2,
    "crop_size": 64,
    "eval_short_side": 48,
    "eval_max_long_side": 96,
}


def _synthetic_shapes(root: Path) -> tuple[dict, bool]:
    return {"root": str(root / "shapes"), "num_train": 4, "num_val": 2, "image_size": 64, **SMALL}, True


def _coco_panoptic(root: Path) -> tuple[dict, bool]:
    from odise_pl.data_modules.synthetic_shapes import generate_synthetic_coco

    folder = generate_synthetic_coco(root / "coco", 4, 2, seed=1, image_size=64)
    return {"root": str(folder), "train_captions_json": "annotations/captions_train2017.json", **SMALL}, True


def _ade20k_panoptic(root: Path) -> tuple[dict, bool]:
    from odise_pl.data_modules.ade20k import prepare_ade20k

    ade = root / "ade"
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for i in range(2):
            semantic = np.full((40, 56), 1, np.uint8)  # wall (1-based ADE-150 labels)
            semantic[:10] = 3  # sky
            semantic[20:36, 4:24] = 8  # bed, a thing
            instance = np.zeros((40, 56, 3), np.uint8)
            instance[20:36, 4:24] = (1, 1 + i, 0)  # instance class 1 (bed), instance id
            image = np.full((40, 56, 3), 60 + 40 * i, np.uint8)
            for sub, array, ext in (("images", image, "jpg"), ("annotations", semantic, "png"), ("annotations_instance", instance, "png")):
                (ade / sub / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(ade / sub / split / f"{prefix}_{i + 1:08d}.{ext}")
    prepare_ade20k(ade)
    return {"root": str(ade), **SMALL}, True


def _semantic_seg(root: Path) -> tuple[dict, bool]:
    from odise_pl.data_modules.semantic import SEMANTIC_SETS

    spec = SEMANTIC_SETS["pascal_context_59"]
    folder = root / "pc59"
    (folder / spec.image_dir).mkdir(parents=True)
    (folder / spec.label_dir).mkdir(parents=True)
    for i in range(2):
        label = np.zeros((40, 56), np.uint8)
        label[8:30, 8:30] = 15
        label[:3] = 255
        Image.fromarray(np.full((40, 56, 3), 50 * i, np.uint8)).save(folder / spec.image_dir / f"img_{i}.jpg")
        Image.fromarray(label).save(folder / spec.label_dir / f"img_{i}{spec.label_suffix}")
    return {"dataset": "pascal_context_59", "root": str(folder), **SMALL}, False  # an evaluation set


#: name -> writes tiny data under a folder, returns (YAML section without `name`, has a training split)
TINY: dict[str, Callable[[Path], tuple[dict, bool]]] = {
    "synthetic_shapes": _synthetic_shapes,
    "coco_panoptic": _coco_panoptic,
    "ade20k_panoptic": _ade20k_panoptic,
    "semantic_seg": _semantic_seg,
}


def test_every_registered_data_module_has_tiny_data_here():
    assert sorted(DATA_MODULES.names()) == sorted(TINY), "add a tiny-data function to TINY for a new data module"


@pytest.fixture(scope="module", params=[n for n in DATA_MODULES.names() if n in TINY])
def module(request, tmp_path_factory):
    section, trains = TINY[request.param](tmp_path_factory.mktemp(request.param))
    entry = DATA_MODULES.get(request.param)
    return entry.cls.from_config(section_to_dataclass(section, entry.config)), trains


def _check_batch(batch: dict, dm, *, evaluation: bool) -> None:
    images = batch["images"]
    assert images.ndim == 4 and images.shape[1] == 3 and images.dtype in (torch.uint8, torch.float32)
    b, _, h, w = images.shape
    divisor = int(getattr(dm, "size_divisibility", 1))
    assert h % divisor == 0 and w % divisor == 0, (h, w, divisor)
    sizes = batch["image_sizes"]
    assert sizes.dtype == torch.long and sizes.shape == (b, 2)
    assert (sizes[:, 0] <= h).all() and (sizes[:, 1] <= w).all()
    assert len(batch["targets"]) == b
    for t in batch["targets"]:
        n = len(t["labels"])
        assert t["masks"].dtype == torch.bool and t["masks"].shape == (n, h, w)
        assert t["labels"].dtype == torch.long
        assert n == 0 or (0 <= int(t["labels"].min()) and int(t["labels"].max()) < dm.num_classes)
        for key in ("is_thing", "iscrowd"):
            assert t[key].dtype == torch.bool and t[key].shape == (n,), key
        assert isinstance(t["image_id"], (int, str))
        if evaluation:
            oh, ow = (int(v) for v in t["orig_size"])
            assert t["gt_semantic"].dtype == torch.int64 and tuple(t["gt_semantic"].shape) == (oh, ow)
            assert isinstance(t["file_name"], str)
            if "gt_panoptic" in t:  # panoptic sets; semantic-only sets have no PQ truth
                assert t["gt_panoptic"].dtype == torch.int64 and tuple(t["gt_panoptic"].shape) == (oh, ow)
                for seg in t["gt_segments"]:
                    assert {"id", "category", "iscrowd", "isthing", "area"} <= set(seg)
                    assert 0 <= seg["category"] < dm.num_classes
    captions = batch.get("captions")
    if captions is not None:
        assert len(captions) == b and all(isinstance(c, str) for caps in captions for c in caps)


def test_categories_and_class_count(module):
    dm, _ = module
    assert dm.num_classes == len(dm.categories) > 0
    for c in dm.categories:
        assert {"id", "name", "isthing", "synonyms"} <= set(c) and isinstance(c["synonyms"], list)
    assert isinstance(dm.ignore_index, int) and not 0 <= dm.ignore_index < dm.num_classes


def test_evaluation_batches_follow_the_contract(module):
    dm, _ = module
    dm.setup("validate")
    _check_batch(next(iter(dm.val_dataloader())), dm, evaluation=True)


def test_training_batches_follow_the_contract(module):
    dm, trains = module
    if not trains:
        pytest.skip("an evaluation set: no training split")
    dm.setup("fit")
    _check_batch(next(iter(dm.train_dataloader())), dm, evaluation=False)
