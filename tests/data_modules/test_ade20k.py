"""ADE20K-150 panoptic: `odise-pl data prepare-ade20k` on a generated miniature of the ADE challenge
layout, the converted folders scored by `odise-pl eval panoptic`, the DataModule, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from odise_pl.cli import main
from odise_pl.data_modules.ade20k import ADE20KPanopticDataModule, prepare_ade20k
from odise_pl.errors import DatasetError
from odise_pl.metrics.panoptic_io import read_panoptic_png

WALL, SKY, BED, WINDOW = 1, 3, 8, 9  # 1-based ADE-150 ids in the semantic PNGs (bed, windowpane: things)
MAPPING = "Instacne100 SceneParsing150 FullADE20K\n1 8 165\n2 9 3055\n"  # instance class -> ADE-150 id


def _write_ade(root, stem="ADE_val_00000007", split="validation"):
    h, w = 24, 32
    semantic = np.full((h, w), WALL, np.uint8)
    semantic[:6] = SKY
    semantic[20:, :4] = 0  # unlabeled
    semantic[10:18, 2:12] = BED  # the semantic map's thing pixels are not used: things come from instances
    instance = np.zeros((h, w, 3), np.uint8)
    instance[10:18, 2:12] = (1, 1, 0)  # bed, instance 1
    instance[8:14, 20:30] = (2, 2, 0)  # windowpane, instance 2 (over wall)
    instance[18:22, 14:18] = (1, 3, 0)  # a second bed, over wall
    for sub, array in (("images", np.zeros((h, w, 3), np.uint8)), ("annotations", semantic),
                       ("annotations_instance", instance)):
        (root / sub / split).mkdir(parents=True, exist_ok=True)
        ext = "jpg" if sub == "images" else "png"
        Image.fromarray(array).save(root / sub / split / f"{stem}.{ext}")
    (root / "mapping.txt").write_text(MAPPING)
    return semantic, instance


def test_prepare_converts_like_mask2former_and_scores_100_against_itself(tmp_path, capsys):
    root = tmp_path / "ADEChallengeData2016"
    semantic, instance = _write_ade(root)
    argv = ["data", "prepare-ade20k", "--root", str(root), "--catid-mapping", str(root / "mapping.txt")]
    assert main(argv) == 0
    assert "val: 1 images" in capsys.readouterr().out

    data = json.loads((root / "ade20k_panoptic_val.json").read_text())
    assert len(data["categories"]) == 150 and sum(c["isthing"] for c in data["categories"]) == 100
    assert data["images"] == [{"id": 7, "file_name": "ADE_val_00000007.jpg", "width": 32, "height": 24}]
    (ann,) = data["annotations"]
    segs = ann["segments_info"]
    # stuff first (sky, wall: 0-based 2 and 0, in class order), then the three instances
    assert sorted(s["category_id"] for s in segs) == [0, 2, 7, 7, 8]
    ids = read_panoptic_png(root / "ade20k_panoptic_val" / ann["file_name"]).numpy()
    cat = {s["id"]: s["category_id"] for s in segs}
    assert all(s["area"] == int((ids == s["id"]).sum()) for s in segs)
    assert (ids[20:, :4] == 0).all()  # unlabeled -> VOID
    assert cat[int(ids[12, 5])] == 7 and cat[int(ids[10, 25])] == 8 and cat[int(ids[0, 0])] == 2
    assert int(ids[19, 15]) != int(ids[12, 5])  # two bed instances, two segments

    out = tmp_path / "r.json"
    assert main(["eval", "panoptic", "--gt-json", str(root / "ade20k_panoptic_val.json"),
                 "--pred-json", str(root / "ade20k_panoptic_val.json"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["PQ"] == 100 and (r["n"], r["n_th"], r["n_st"]) == (4, 2, 2)

    with pytest.raises(DatasetError, match="exists already"):
        prepare_ade20k(root, root / "mapping.txt")


def test_datamodule_reads_the_converted_split_with_the_package_vocabulary(tmp_path):
    root = tmp_path / "ade"
    _write_ade(root)
    prepare_ade20k(root, root / "mapping.txt")
    dm = ADE20KPanopticDataModule(root=str(root), num_workers=0, pin_memory=False)
    assert dm.num_classes == 150 and sum(dm.is_thing) == 100
    assert dm.categories[1]["synonyms"] == ["building", "buildings", "edifice", "edifices"]  # the prompt-eng list
    dm.setup("validate")
    sample = dm.datasets["val"][0]
    assert sample["image"].shape[-2:] == (1024, 1365)  # short side 1024, as the reference evaluates
    target = sample["target"]
    assert target["gt_panoptic"].shape == (24, 32) and len(target["gt_segments"]) == 5


def test_missing_data_says_what_to_download_and_where(tmp_path):
    dm = ADE20KPanopticDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"(?s)nowhere.*ADEChallengeData2016\.zip.*prepare-ade20k"):
        dm.categories
    root = tmp_path / "ade"
    _write_ade(root)
    with pytest.raises(DatasetError, match="no_mapping.txt does not exist.*ADEChallengeData2016"):
        prepare_ade20k(root, tmp_path / "no_mapping.txt")
    (root / "annotations_instance" / "validation" / "ADE_val_00000007.png").unlink()
    with pytest.raises(DatasetError, match="ADE_val_00000007.png .*does not exist.*annotations_instance"):
        prepare_ade20k(root, root / "mapping.txt")
    (root / "bad.txt").write_text("header\n1 1 5\n")  # wall is not a thing class
    with pytest.raises(DatasetError, match="not thing classes"):
        prepare_ade20k(root, root / "bad.txt")
