"""The COCO panoptic reader and data module: real sample, batches, errors, bad-sample skipping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.data_modules.coco_panoptic import CocoPanopticConfig, CocoPanopticDataModule
from odise_pl.errors import DatasetError
from odise_pl.registry import DATA_MODULES


def _sample_module(root: Path, **overrides) -> CocoPanopticDataModule:
    kwargs = dict(
        root=str(root),
        num_workers=0,
        pin_memory=False,
        batch_size=2,
        eval_batch_size=2,
        crop_size=256,
        eval_short_side=200,
        eval_max_long_side=400,
    )
    for split in ("train", "val"):
        kwargs.update({f"{split}_json": "panoptic_examples.json", f"{split}_image_dir": "images", f"{split}_panoptic_dir": "panoptic"})
    kwargs.update(overrides)
    return CocoPanopticDataModule(**kwargs)


def test_registered_with_reference_defaults():
    entry = DATA_MODULES.get("coco_panoptic")
    assert entry.cls is CocoPanopticDataModule and entry.config is CocoPanopticConfig
    cfg = CocoPanopticConfig()
    assert (cfg.crop_size, cfg.min_scale, cfg.max_scale, cfg.eval_short_side, cfg.eval_max_long_side) == (1024, 0.1, 2.0, 1024, 2560)
    assert cfg.train_json == "annotations/panoptic_train2017.json" and cfg.ignore_index == 255


def test_real_sample_training_batch(coco_sample):
    dm = _sample_module(coco_sample)
    assert dm.num_classes == 133 and sum(dm.is_thing) == 80
    assert dm.categories[0] == {"id": 1, "name": "person", "isthing": True, "synonyms": ["person"]}
    assert any(c["name"].endswith("-merged") and "merged" not in c["synonyms"][0] for c in dm.categories)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 256, 256) and batch["images"].dtype == torch.uint8
    assert "captions" not in batch
    for i, target in enumerate(batch["targets"]):
        n = target["labels"].shape[0]
        assert target["masks"].shape == (n, 256, 256) and target["masks"].dtype == torch.bool
        assert target["is_thing"].shape == target["iscrowd"].shape == (n,)
        assert target["masks"].flatten(1).any(1).all()  # no empty segment survives the crop
        h, w = batch["image_sizes"][i].tolist()
        assert not target["masks"][:, h:].any() and not target["masks"][:, :, w:].any()


def test_real_sample_evaluation_items(coco_sample):
    dm = _sample_module(coco_sample)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    data = json.loads((coco_sample / "panoptic_examples.json").read_text())
    anns = {a["image_id"]: a for a in data["annotations"]}
    assert batch["images"].shape[-2:] == (224, 384)  # 200x300 and 200x356 padded to /32
    for target in batch["targets"]:
        ann = anns[target["image_id"]]
        h, w = target["orig_size"]
        assert target["gt_panoptic"].shape == target["gt_semantic"].shape == (h, w)
        assert target["gt_panoptic"].dtype == target["gt_semantic"].dtype == torch.int64
        assert {s["id"] for s in target["gt_segments"]} == {s["id"] for s in ann["segments_info"]}
        void = target["gt_panoptic"] == 0
        assert (target["gt_semantic"][void] == 255).all() and (target["gt_semantic"][~void] < 133).all()
        crowd = [s for s in target["gt_segments"] if s["iscrowd"]]
        assert crowd and target["iscrowd"].sum() == len(crowd)
        for seg in crowd:  # crowd pixels keep their class in the semantic map
            assert (target["gt_semantic"][target["gt_panoptic"] == seg["id"]] == seg["category"]).all()
        assert Path(target["file_name"]).is_file()


def test_synthetic_batches_have_captions_and_seeded_augmentation(synth_root, make_module):
    dm = make_module(synth_root)
    dm.setup("fit")
    torch.manual_seed(0)
    first = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    again = next(iter(dm.train_dataloader()))
    assert torch.equal(first["images"], again["images"])
    assert len(first["captions"]) == 4 and all(3 <= len(c) <= 5 for c in first["captions"])
    dm.size_divisibility = 48  # the model may raise it before building loaders
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape[-2:] == (96, 96)


# ----------------------------------------------------------------------------- errors
@pytest.fixture()
def broken_root(synth_root, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    return root


def test_missing_root_names_path_and_layout(tmp_path, make_module):
    with pytest.raises(DatasetError, match="Expected COCO panoptic layout") as err:
        make_module(tmp_path / "nowhere").setup("fit")
    assert str(tmp_path / "nowhere") in str(err.value) and "panoptic_train2017" in str(err.value)


def test_missing_json_and_image_dir(broken_root, make_module):
    (broken_root / "annotations" / "panoptic_train2017.json").unlink()
    with pytest.raises(DatasetError, match="panoptic_train2017.json does not exist") as err:
        make_module(broken_root).setup("fit")
    assert "Expected COCO panoptic layout" in str(err.value)
    shutil.rmtree(broken_root / "val2017")
    with pytest.raises(DatasetError, match=f"image directory {broken_root / 'val2017'} does not exist"):
        make_module(broken_root).setup("validate")


def test_malformed_json_names_file(broken_root, make_module):
    path = broken_root / "annotations" / "panoptic_val2017.json"
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DatasetError, match=f"{path} is not valid JSON"):
        make_module(broken_root).setup("validate")


def _first_val(root: Path) -> tuple[dict, dict]:
    data = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    return data["images"][0], data["annotations"][0]


def test_png_id_missing_from_json(broken_root, make_module):
    image, ann = _first_val(broken_root)
    png = broken_root / "panoptic_val2017" / ann["file_name"]
    rgb = np.asarray(Image.open(png)).copy()
    rgb[:3, :3] = (1, 2, 3)  # id 1 + 2*256 + 3*65536
    Image.fromarray(rgb).save(png)
    dm = make_module(broken_root)
    dm.setup("validate")
    with pytest.raises(DatasetError) as err:
        dm.datasets["val"][0]
    message = str(err.value)
    assert str(png) in message and str(1 + 2 * 256 + 3 * 65536) in message
    assert f"image id {image['id']}" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_image_names_file(broken_root, make_module, damage):
    image, _ = _first_val(broken_root)
    path = broken_root / "val2017" / image["file_name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an image at all")
    dm = make_module(broken_root)
    dm.setup("validate")
    with pytest.raises(DatasetError, match=f"cannot decode image {path}"):
        dm.datasets["val"][0]


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_bad_samples_counts_them(broken_root, make_module, workers):
    image, _ = _first_val(broken_root)
    (broken_root / "val2017" / image["file_name"]).write_bytes(b"junk")
    dm = make_module(broken_root, skip_bad_samples=True, num_workers=workers)
    dm.setup("validate")
    with pytest.warns(UserWarning, match="skipping bad sample") if workers == 0 else _no_check():
        ids = [t["image_id"] for b in dm.val_dataloader() for t in b["targets"]]
    assert image["id"] not in ids and len(ids) == 7
    assert dm.num_skipped == 1
    train_json = broken_root / "annotations" / "panoptic_train2017.json"
    train_image = json.loads(train_json.read_text())["images"][0]
    (broken_root / "train2017" / train_image["file_name"]).write_bytes(b"junk")
    dm = make_module(broken_root, skip_bad_samples=True, num_workers=0, batch_size=40)
    dm.setup("fit")
    with pytest.warns(UserWarning):
        batch = next(iter(dm.train_dataloader()))
    assert len(batch["targets"]) == 40 and dm.num_skipped == 1  # replaced, not dropped


class _no_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_vocabulary_supplies_synonyms(coco_sample, synth_root, make_module):
    from odise_pl.errors import ConfigError

    dm = _sample_module(coco_sample, vocabulary="coco_panoptic_with_prompt_eng")
    person = dm.categories[0]
    assert person["name"] == "person" and len(person["synonyms"]) > 1
    with pytest.raises(ConfigError, match="has 133 classes but the dataset JSON has 10"):
        make_module(synth_root, vocabulary="coco_panoptic").categories


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_images_of_any_mode_decode_to_rgb(tmp_path, mode):
    from odise_pl.data_modules.panoptic_files import read_rgb_image

    path = tmp_path / "x.png"
    Image.new("RGB", (5, 3), (200, 10, 10)).convert(mode).save(path)
    image = read_rgb_image(path)
    assert image.shape == (3, 5, 3) and image.dtype == np.uint8


def test_exif_orientation_is_applied_unless_the_annotation_disagrees(tmp_path):
    from odise_pl.data_modules.panoptic_files import read_rgb_image

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 0, 255)).save(path, exif=exif)
    assert read_rgb_image(path).shape == (40, 20, 3)
    assert read_rgb_image(path, expected_hw=(40, 20)).shape == (40, 20, 3)
    assert read_rgb_image(path, expected_hw=(20, 40)).shape == (20, 40, 3)  # annotated as stored


def test_evaluation_shards_follow_the_trainer(synth_root, make_module):
    from types import SimpleNamespace

    from odise_pl.data_modules.sampling import InferenceShardSampler

    seen = []
    for rank in range(3):
        dm = make_module(synth_root)
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, InferenceShardSampler)
        seen += [t["image_id"] for b in loader for t in b["targets"]]
    assert sorted(seen) == sorted(r.image_id for r in dm.datasets["val"].records)
