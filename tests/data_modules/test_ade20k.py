"""ADE20K-150: `odise-pl data prepare-ade20k` on a generated miniature of the ADE challenge layout,
checked against values computed here from the rules of the reference's scripts
(prepare_ade20k_{sem,pan,ins}_seg.py), the written PQ truth scored by the COCO panoptic API, the
DataModule (semantic truth from annotations_detectron2), and the errors."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.cli import main
from odise_pl.data_modules.ade20k import ADE20KPanopticConfig, ADE20KPanopticDataModule, prepare_ade20k
from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import read_panoptic_png
from odise_pl.metrics.panoptic_quality import PanopticQuality

# 1-based ADE-150 labels of the semantic PNGs; bed and windowpane are things (instance classes 1, 2)
WALL, FLOOR, ROAD, SKY, SKYSCRAPER, BED, WINDOW = 1, 4, 7, 3, 49, 8, 9
INSTANCE_CLASS = {BED: 1, WINDOW: 2}
H, W = 24, 32


def _image(variant: int):
    """(semantic (H, W), instance (H, W, 3)) uint8 in the ADE format; ``variant`` changes the scene."""
    semantic = np.full((H, W), WALL, np.uint8)
    semantic[:6] = SKY
    semantic[20:, :4] = 0  # unlabeled
    semantic[10:18, 2:12] = BED
    semantic[12:16, 4:8] = FLOOR  # floor entirely under the bed instance: listed, no pixel
    instance = np.zeros((H, W, 3), np.uint8)
    instance[10:18, 2:12] = (INSTANCE_CLASS[BED], 1, 0)
    instance[8:14, 20:30] = (INSTANCE_CLASS[WINDOW], 2, 0)  # a window over wall: wall area > its pixels
    semantic[19:23, 24:28] = BED  # a semantic bed without instance: VOID in the panoptic PNG
    if variant >= 1:
        instance[18:22, 14:18] = (INSTANCE_CLASS[BED], 3, 0)  # a second bed: another colour
        semantic[:3, :10] = ROAD
        semantic[:3, 10:20] = SKYSCRAPER  # ODISE's copy would give both one colour
    if variant >= 2:
        instance[0:4, 28:32] = (INSTANCE_CLASS[WINDOW], 7, 0)
    return semantic, instance


def _write_ade(root, stems=("ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"), split="validation"):
    scenes = {}
    for variant, stem in enumerate(stems):
        semantic, instance = _image(variant)
        for sub, array in (("images", np.zeros((H, W, 3), np.uint8)), ("annotations", semantic), ("annotations_instance", instance)):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
            ext = "jpg" if sub == "images" else "png"
            Image.fromarray(array).save(root / sub / split / f"{stem}.{ext}")
        scenes[stem] = (semantic, instance)
    return scenes


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _expected_segments(semantic, instance, is_thing):
    """(category, area, bbox, pixel mask in the panoptic PNG) per segment, by the scripts' rules."""
    labels = semantic.astype(int) - 1
    owner = np.full(labels.shape, -1)
    out = []
    for cat in sorted(set(np.unique(labels).tolist()) - {-1}):
        if not is_thing[cat]:
            mask = labels == cat
            owner[mask] = len(out)
            out.append([cat, int(mask.sum()), _bbox(mask)])  # area and bbox before the paste
    to_ade = {1: BED - 1, 2: WINDOW - 1}
    for inst in sorted(set(np.unique(instance[..., 1]).tolist()) - {0}):
        mask = instance[..., 1] == inst
        owner[mask] = len(out)
        out.append([to_ade[int(instance[..., 0][mask][0])], int(mask.sum()), _bbox(mask)])
    return [(cat, area, bbox, owner == i) for i, (cat, area, bbox) in enumerate(out)]


def _write_perfect_prediction(path, gt: dict) -> None:
    """The GT PNGs as predictions: every segment with pixels (the covered floor has none)."""
    keep = [dict(a, segments_info=[s for s in a["segments_info"] if s["category_id"] != FLOOR - 1]) for a in gt["annotations"]]
    path.write_text(json.dumps({"annotations": keep}))


def _score_with_the_api(gt_json, gt_dir, pred_json, pred_dir, monkeypatch):
    from panopticapi import evaluation

    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 1)
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluation.pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))


def test_prepare_writes_what_the_reference_scripts_write(tmp_path, capsys, monkeypatch):
    root = tmp_path / "ADEChallengeData2016"
    scenes = _write_ade(root)
    _write_ade(root, ("ADE_train_00000009",), "training")
    assert main(["data", "prepare-ade20k", "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "val: 3 images" in printed and "train: 1 images" in printed

    data = json.loads((root / "ade20k_panoptic_val.json").read_text())
    cats = data["categories"]
    assert [c["id"] for c in cats] == list(range(150)) and sum(c["isthing"] for c in cats) == 100
    assert cats[6] == {"name": "road, route", "id": 6, "isthing": 0, "color": [140, 140, 140]}
    assert cats[8]["name"] == "window " and cats[12]["name"] == "person" and cats[12]["isthing"] == 1
    assert cats[48]["color"] == [140, 140, 200]  # upstream's skyscraper, not ODISE's road colour
    assert cats[65]["name"] == "toilet, can, commode, crapper, pot, potty, stool, throne"
    is_thing = [bool(c["isthing"]) for c in cats]
    assert data["images"][0] == {"id": "ADE_val_00000001", "file_name": "ADE_val_00000001.jpg", "width": W, "height": H}

    for ann in data["annotations"]:
        semantic, instance = scenes[ann["image_id"]]
        assert ann["file_name"] == f"{ann['image_id']}.png"
        ids = read_panoptic_png(root / "ade20k_panoptic_val" / ann["file_name"]).astype(np.int64)
        expected = _expected_segments(semantic, instance, is_thing)
        segs = ann["segments_info"]
        assert [(s["category_id"], s["area"], s["bbox"], s["iscrowd"]) for s in segs] == [
            (cat, area, bbox, 0) for cat, area, bbox, _ in expected
        ]
        assert len({s["id"] for s in segs}) == len(segs)  # road and skyscraper: two segments
        for seg, (cat, _, _, pixels) in zip(segs, expected):
            assert np.array_equal(ids == seg["id"], pixels), (ann["image_id"], cat)
            if not is_thing[cat]:  # stuff ids are the category colours (panopticapi's IdGenerator)
                r, g, b = cats[cat]["color"]
                assert seg["id"] == r + 256 * g + 65536 * b
        floor = [s for s in segs if s["category_id"] == FLOOR - 1]
        assert floor[0]["area"] == 16 and not (ids == floor[0]["id"]).any()  # kept, no pixel
        wall = [s for s in segs if s["category_id"] == WALL - 1][0]
        assert wall["area"] > int((ids == wall["id"]).sum())  # counted before the window was pasted
        assert (ids[19:23, 24:28] == 0).all() and (ids[20:, :4] == 0).all()  # VOID

    # the semantic truth: label - 1, unlabeled 255, for both splits
    for stem, (semantic, _) in scenes.items():
        written = np.asarray(Image.open(root / "annotations_detectron2" / "validation" / f"{stem}.png"))
        assert written.dtype == np.uint8
        assert np.array_equal(written, np.where(semantic == 0, 255, semantic - 1))
    assert (root / "annotations_detectron2" / "training" / "ADE_train_00000009.png").is_file()

    # the instance truth: the instance-challenge categories, one RLE annotation per instance
    from pycocotools import mask as mask_util

    inst = json.loads((root / "ade20k_instance_val.json").read_text())
    assert inst["images"] == data["images"] and len(inst["categories"]) == 100
    assert inst["categories"][:2] == [{"id": 7, "name": "bed"}, {"id": 8, "name": "windowpane"}]
    assert [a["id"] for a in inst["annotations"]] == list(range(1, len(inst["annotations"]) + 1))
    for ann in inst["annotations"]:
        instance = scenes[ann["image_id"]][1]
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        (inst_id,) = np.unique(instance[..., 1][mask]).tolist()
        assert np.array_equal(mask, instance[..., 1] == inst_id) and ann["area"] == int(mask.sum())
        assert ann["bbox"] == _bbox(mask) and ann["iscrowd"] == 0
        assert ann["category_id"] == {1: BED - 1, 2: WINDOW - 1}[int(instance[..., 0][mask][0])]
    assert len(inst["annotations"]) == 2 + 3 + 4

    # a perfect prediction of the panoptic PNGs, scored by `eval panoptic` and by the COCO API
    _write_perfect_prediction(tmp_path / "pred.json", data)
    gt_json, gt_dir = root / "ade20k_panoptic_val.json", root / "ade20k_panoptic_val"
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "panoptic",
                "--gt-json",
                str(gt_json),
                "--pred-json",
                str(tmp_path / "pred.json"),
                "--pred-folder",
                str(gt_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ours = json.loads(out.read_text())
    api = _score_with_the_api(gt_json, gt_dir, tmp_path / "pred.json", gt_dir, monkeypatch)
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert ours[key.upper() + suffix] == pytest.approx(100 * api[name][key], abs=1e-9)
    assert ours["PQ_th"] == 100 and ours["PQ_st"] < 100  # covered floor (FN), wall IoU < 1
    assert ours["per_class"]["3"]["FN"] == 3  # floor, once per image

    with pytest.raises(DatasetError, match="exist.*already.*--overwrite"):
        prepare_ade20k(root)
    prepare_ade20k(root, overwrite=True)
    assert json.loads(gt_json.read_text()) == data  # the same files again (seeded thing colours)


def test_datamodule_reads_the_reference_truth(tmp_path, monkeypatch):
    root = tmp_path / "ade"
    scenes = _write_ade(root)
    prepare_ade20k(root)
    assert ADE20KPanopticConfig().root == "datasets/ade/ADEChallengeData2016"  # where ODISE registers it
    dm = ADE20KPanopticDataModule(root=str(root), num_workers=0, pin_memory=False)
    assert dm.num_classes == 150 and sum(dm.is_thing) == 100
    assert dm.categories[1]["synonyms"] == ["building", "buildings", "edifice", "edifices"]  # the prompt-eng list
    dm.setup("validate")
    metric = PanopticQuality(is_thing=dm.is_thing)
    for i, (stem, (semantic, instance)) in enumerate(scenes.items()):
        sample = dm.datasets["val"][i]
        assert sample["image"].shape[-2:] == (1024, 1365)  # short side 1024, as the reference evaluates
        target = sample["target"]
        assert target["image_id"] == stem
        # mIoU truth: the ADE semantic map (label - 1), not the panoptic PNG: the semantic bed
        # without an instance is bed here, VOID in the panoptic map
        expected = torch.from_numpy(np.where(semantic == 0, 255, semantic.astype(np.int64) - 1))
        assert torch.equal(target["gt_semantic"], expected) and int(target["gt_semantic"][20, 25]) == BED - 1
        # PQ truth: every listed segment with its JSON area, the covered floor included
        segs = target["gt_segments"]
        floor = [s for s in segs if s["category"] == FLOOR - 1]
        assert len(floor) == 1 and floor[0]["area"] == 16
        gt = target["gt_panoptic"]
        present = set(torch.unique(gt).tolist())
        metric.update(gt, [{"id": s["id"], "category": s["category"]} for s in segs if s["id"] in present], gt, segs)
        # mask AP's instances (from the panoptic things) are the instance JSON's
        from odise_pl.metrics.mask_ap import panoptic_to_instances

        derived = panoptic_to_instances(gt, segs, torch.tensor(dm.is_thing))
        ids = instance[..., 1]
        inst_masks = [ids == k for k in sorted(set(np.unique(ids).tolist()) - {0})]
        assert len(derived["masks"]) == len(inst_masks)
        assert {m.numpy().tobytes() for m in derived["masks"]} == {m.tobytes() for m in inst_masks}
    gt_data = json.loads((root / "ade20k_panoptic_val.json").read_text())
    _write_perfect_prediction(tmp_path / "pred.json", gt_data)
    api = _score_with_the_api(
        root / "ade20k_panoptic_val.json", root / "ade20k_panoptic_val", tmp_path / "pred.json", root / "ade20k_panoptic_val", monkeypatch
    )
    scores = metric.compute()
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        assert float(scores["PQ" + suffix]) == pytest.approx(100 * api[name]["pq"], abs=1e-9)
    assert float(scores["PQ_st"]) < 100


def test_missing_data_says_what_to_download_and_where(tmp_path):
    dm = ADE20KPanopticDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"(?s)nowhere.*ADEChallengeData2016\.zip.*prepare-ade20k"):
        dm.categories
    root = tmp_path / "ade"
    _write_ade(root, ("ADE_val_00000007",))
    with pytest.raises(DatasetError, match="no_mapping.txt does not exist.*packaged"):
        prepare_ade20k(root, tmp_path / "no_mapping.txt")
    (root / "bad.txt").write_text("header\n1 8 165\n")
    with pytest.raises(DatasetError, match=r"bad.txt maps no ADE-150 class for the instance classes \[2, 3"):
        prepare_ade20k(root, root / "bad.txt")
    (root / "annotations_instance" / "validation" / "ADE_val_00000007.png").unlink()
    with pytest.raises(DatasetError, match="ADE_val_00000007.png .*does not exist.*annotations_instance"):
        prepare_ade20k(root)
    with pytest.raises(DatasetError, match="Neither .*validation.*ADEChallengeData2016.zip"):
        prepare_ade20k(tmp_path / "empty")
    _write_ade(root, ("ADE_val_00000007",))
    prepare_ade20k(root)
    (root / "annotations_detectron2" / "validation" / "ADE_val_00000007.png").unlink()
    dm = ADE20KPanopticDataModule(root=str(root), num_workers=0)
    dm.setup("validate")
    with pytest.raises(DatasetError, match="ADE_val_00000007.png .*does not exist.*mIoU ground truth"):
        dm.datasets["val"][0]
