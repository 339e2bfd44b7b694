"""Generated data: determinism, COCO-panoptic consistency, captions, CLI and the data module."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odise_pl.data_modules.synthetic_shapes import (
    SyntheticShapesConfig,
    SyntheticShapesDataModule,
    add_synth_arguments,
    generate_synthetic_coco,
    run_synth,
)
from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import read_panoptic_png
from odise_pl.registry import DATA_MODULES


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = _hashes(generate_synthetic_coco(tmp_path / "a", 6, 3, seed=7, image_size=48))
    b = _hashes(generate_synthetic_coco(tmp_path / "b", 6, 3, seed=7, image_size=48))
    c = _hashes(generate_synthetic_coco(tmp_path / "c", 6, 3, seed=8, image_size=48))
    assert a == b
    assert len(a) == 6 * 3 + 3 * 3 + 4 + 1  # jpg+png+semantic per image, 4 JSONs, manifest
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert any(k.endswith(".jpg") for k in differing) and any(k.endswith(".json") for k in differing)


@pytest.mark.parametrize("split", ["train", "val"])
def test_json_and_pngs_agree(synth_root, split):
    data = json.loads((synth_root / "annotations" / f"panoptic_{split}2017.json").read_text())
    cats = data["categories"]
    assert {c["name"] for c in cats if c["isthing"]} == {"circle", "square", "triangle", "star", "cross"}
    assert all({"id", "name", "isthing", "color", "supercategory"} <= c.keys() for c in cats)
    contiguous = {c["id"]: i for i, c in enumerate(cats)}
    images = {im["id"]: im for im in data["images"]}
    assert len(data["annotations"]) == len(images)
    saw_crowd = saw_void = False
    for ann in data["annotations"]:
        im = images[ann["image_id"]]
        assert (synth_root / f"{split}2017" / im["file_name"]).is_file()
        ids = read_panoptic_png(synth_root / f"panoptic_{split}2017" / ann["file_name"])
        assert ids.shape == (im["height"], im["width"])
        segs = {s["id"]: s for s in ann["segments_info"]}
        assert set(np.unique(ids).tolist()) - {0} == set(segs)  # every PNG id in the JSON and back
        semantic = np.asarray(Image.open(synth_root / f"panoptic_semseg_{split}2017" / ann["file_name"]))
        assert (semantic[ids == 0] == 255).all()
        for sid, seg in segs.items():
            mask = ids == sid
            ys, xs = np.nonzero(mask)
            assert seg["area"] == mask.sum() > 0
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert (semantic[mask] == contiguous[seg["category_id"]]).all()
            saw_crowd |= bool(seg["iscrowd"])
        saw_void |= bool((ids == 0).any())
    if split == "train":
        assert saw_crowd and saw_void


def test_captions_name_the_content(synth_root):
    caps = json.loads((synth_root / "annotations" / "captions_train2017.json").read_text())
    pan = json.loads((synth_root / "annotations" / "panoptic_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in pan["categories"]}
    per_image: dict[int, list[str]] = {}
    for ann in caps["annotations"]:
        assert {"id", "image_id", "caption"} <= ann.keys()
        per_image.setdefault(ann["image_id"], []).append(ann["caption"].lower())
    assert len({a["id"] for a in caps["annotations"]}) == len(caps["annotations"])
    assert set(per_image) == {im["id"] for im in caps["images"]}
    for ann in pan["annotations"]:
        texts = per_image[ann["image_id"]]
        assert 3 <= len(texts) <= 5
        for seg in ann["segments_info"]:  # every category is named by some caption
            assert any(names[seg["category_id"]] in t for t in texts)
    assert any("circles" in t or "crosses" in t or "squares" in t for ts in per_image.values() for t in ts)


def test_generation_refuses_to_overwrite(tmp_path):
    out = generate_synthetic_coco(tmp_path / "d", 1, 1, seed=0, image_size=32)
    with pytest.raises(DatasetError, match=str(out)):
        generate_synthetic_coco(out, 1, 1, seed=1, image_size=32)
    generate_synthetic_coco(out, 2, 1, seed=1, image_size=32, overwrite=True)
    assert len(list((out / "train2017").iterdir())) == 2


def test_synth_command(tmp_path, capsys):
    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(tmp_path / "cli"), "--num-train", "3", "--num-val", "2", "--seed", "1", "--image-size", "32"])
    assert run_synth(args) == 0
    assert "3 train + 2 val" in capsys.readouterr().out
    assert len(list((tmp_path / "cli" / "val2017").glob("*.jpg"))) == 2


def test_registered_module_generates_on_first_use(tmp_path):
    entry = DATA_MODULES.get("synthetic_shapes")
    assert entry.cls is SyntheticShapesDataModule and entry.config is SyntheticShapesConfig
    cfg = SyntheticShapesConfig(
        root=str(tmp_path / "auto"),
        num_train=4,
        num_val=2,
        image_size=32,
        crop_size=32,
        eval_short_side=32,
        batch_size=2,
        num_workers=0,
        pin_memory=False,
    )
    dm = entry.cls.from_config(cfg)
    assert dm.num_classes == 10  # before setup (the runner builds the model first): generates
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 32, 32) and len(batch["captions"]) == 2
    other = SyntheticShapesConfig(root=str(tmp_path / "auto"), num_train=5, num_val=2, image_size=32)
    with pytest.raises(DatasetError, match="num_train: folder has 4, config asks 5"):
        entry.cls.from_config(other).setup("fit")
