"""Folder evaluation: the real COCO sample, parity with the COCO panoptic API on perturbed
predictions, the printed table, file errors, and semantic label folders."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import read_panoptic_png
from odise_pl.metrics import panoptic_io
from odise_pl.metrics.panoptic_io import (
    PanopticCategories,
    evaluate_panoptic_folders,
    evaluate_semantic_folders,
    format_pq_table,
    segments_from_json,
)
from odise_pl.metrics.panoptic_quality import PanopticQuality

from .synthetic_panoptic import ids_to_rgb, perturb, random_panoptic, reference_pq, write_panoptic

SAMPLE = Path(__file__).parents[2] / ".." / "shared" / "data" / "coco_panoptic_sample"
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "panoptic_examples.json").is_file(),
    reason=f"the real COCO panoptic sample is not at {SAMPLE} (a shared read-only fixture beside the repo)",
)


def _sample():
    data = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    categories = PanopticCategories.from_json(data["categories"])
    images = []
    for ann in data["annotations"]:
        ids = read_panoptic_png(SAMPLE / "panoptic" / ann["file_name"]).astype(np.int64)
        segments = segments_from_json(ann["segments_info"], categories.index_of(), str(ann["image_id"]))
        images.append((ann["image_id"], ids, segments))
    return data, categories, images


@needs_sample
def test_ground_truth_against_itself_scores_100():
    gt_json, folder = SAMPLE / "panoptic_examples.json", SAMPLE / "panoptic"
    results = evaluate_panoptic_folders(gt_json, folder, gt_json, folder)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert results[key] == 100.0, key
    assert (results["n"], results["n_th"], results["n_st"]) == (8, 4, 4)
    person = results["per_class"][1]
    assert person["name"] == "person" and person["TP"] > 0 and person["FN"] == 0 and person["FP"] == 0

    _, categories, images = _sample()
    metric = PanopticQuality(categories.is_thing)
    for _, ids, segs in images:
        metric.update(torch.from_numpy(ids), segs, torch.from_numpy(ids), segs)
    assert all(float(v) == 100.0 for k, v in metric.compute().items() if not k.startswith("n"))


@needs_sample
def test_table_matches_the_api_printout():
    gt_json, folder = str(SAMPLE / "panoptic_examples.json"), str(SAMPLE / "panoptic")
    pq_compute = pytest.importorskip("panopticapi.evaluation", reason="needs the COCO panoptic API").pq_compute
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        pq_compute(gt_json, gt_json, folder, folder)
    api_table = [line for line in printed.getvalue().splitlines() if "|" in line or set(line) == {"-"}]
    ours = format_pq_table(evaluate_panoptic_folders(gt_json, folder, gt_json, folder)).splitlines()
    assert ours == api_table
    assert ours[0] == "          |    PQ     SQ     RQ     N"


@needs_sample
def test_parity_with_the_api_on_perturbed_real_predictions(tmp_path):
    data, categories, images = _sample()
    gt_json, gt_folder = SAMPLE / "panoptic_examples.json", SAMPLE / "panoptic"
    rng = np.random.default_rng(0)
    imperfect = 0
    for trial in range(6):
        preds = [
            (image_id, *perturb(rng, ids, segs, strength=trial + 2, num_classes=len(categories.ids))) for image_id, ids, segs in images
        ]
        pred_json, pred_folder = write_panoptic(tmp_path / str(trial), "pred", preds, data["categories"])
        ref = reference_pq(gt_json, gt_folder, pred_json, pred_folder)
        ours = evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder)
        for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for key in ("pq", "sq", "rq"):
                assert ours[key.upper() + suffix] == pytest.approx(100 * ref[name][key], abs=1e-6)
            assert ours["n" + suffix] == ref[name]["n"]
        for cat_id, (_iou, tp, fp, fn) in ref["stat"].items():
            row = ours["per_class"][cat_id]
            assert (row["TP"], row["FP"], row["FN"]) == (tp, fp, fn), cat_id
            assert row["PQ"] == pytest.approx(100 * ref["per_class"][cat_id]["pq"], abs=1e-6)
        imperfect += ours["PQ"] < 100.0
    assert imperfect >= 4  # the perturbations do change the score


def test_workers_give_bit_identical_results(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    gts, preds = [], []
    for image_id in range(1, 10):
        ids, segs = random_panoptic(rng)
        gts.append((image_id, ids, segs))
        preds.append((image_id, *perturb(rng, ids, segs)))
    gt_json, gt_folder = write_panoptic(tmp_path, "gt", gts)
    pred_json, pred_folder = write_panoptic(tmp_path, "pred", preds)
    one = evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder, workers=1)
    assert 0 < one["PQ"] < 100
    for workers in (2, 3):  # 9 images: chunks of 2 and 1 images on 2 and 3 processes
        assert evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder, workers=workers) == one
    monkeypatch.setattr(panoptic_io, "IMAGES_PER_WORKER", 4)  # workers=None: 2 processes for 9 images
    monkeypatch.setattr(panoptic_io.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert panoptic_io.default_workers(9) == 2 and panoptic_io.default_workers(3) == 1
    assert evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder, workers=None) == one

    # an error in a worker's image reaches the caller naming the image, as with one process
    (pred_folder / "000000000008.png").write_bytes(b"not a png")
    for workers in (1, 2):
        with pytest.raises(DatasetError, match="cannot decode panoptic PNG .*000000000008.png"):
            evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder, workers=workers)
    table = format_pq_table(one, per_class=True)
    assert "cat1 [th]" in table and "cat30 [st]" in table


def test_read_panoptic_png_decodes_rgb_and_rgba(tmp_path):
    ids = np.array([[0, 1, 256], [65536, 3153362, 2**24 - 1]])
    Image.fromarray(ids_to_rgb(ids)).save(tmp_path / "rgb.png")
    rgba = np.concatenate([ids_to_rgb(ids), np.full((*ids.shape, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for name in ("rgb.png", "rgba.png"):
        decoded = read_panoptic_png(tmp_path / name)
        assert decoded.dtype == np.uint32 and decoded.tolist() == ids.tolist()


def test_errors_name_the_image_the_file_and_the_segment(tmp_path):
    rng = np.random.default_rng(6)
    ids, segs = random_panoptic(rng)
    gt_json, gt_folder = write_panoptic(tmp_path, "gt", [(7, ids, segs)])
    pred_ids, pred_segs = perturb(rng, ids, segs, strength=0)

    pred_json, pred_folder = write_panoptic(tmp_path, "other", [(8, pred_ids, pred_segs)])
    with pytest.raises(DatasetError, match="image id 7"):
        evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder)

    pred_json, pred_folder = write_panoptic(tmp_path, "pred", [(7, pred_ids, pred_segs[1:])])
    with pytest.raises(ValueError, match=rf"image id 7.*\[{pred_segs[0]['id']}\]"):
        evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder)

    bad = json.loads(pred_json.read_text())
    bad["annotations"][0]["segments_info"][0]["category_id"] = 999
    pred_json.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="unknown category_id 999"):
        evaluate_panoptic_folders(gt_json, gt_folder, pred_json, pred_folder)

    shutil.rmtree(pred_folder)
    pred_folder.mkdir()
    with pytest.raises(DatasetError, match="000000000007.png does not exist"):
        evaluate_panoptic_folders(gt_json, gt_folder, gt_json, pred_folder)
    with pytest.raises(DatasetError, match="folder"):
        evaluate_panoptic_folders(gt_json, gt_folder, gt_json, tmp_path / "missing")


def test_semantic_folders_png_and_uint16_tiff(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    target = np.array([[255, 255, 65535], [0, 300, 300]], dtype=np.uint16)
    Image.fromarray(target).save(gt / "a.tif")
    Image.fromarray(np.array([[255, 0, 7], [0, 300, 2]], dtype=np.uint16)).save(pred / "a.tif")
    Image.fromarray(np.array([[1, 255]], dtype=np.uint8)).save(gt / "b.png")
    Image.fromarray(np.array([[1, 9]], dtype=np.uint8)).save(pred / "b.png")
    out = evaluate_semantic_folders(gt, pred, num_classes=847, ignore_label=65535, average="gt_present")
    assert out["num_images"] == 2 and out["n"] == 4  # classes 0, 1, 255, 300
    assert out["IoU"][255] == pytest.approx(100 * 1 / 3)  # tp 1; GT 255 has 3 pixels, no other pred 255
    assert out["pACC"] == pytest.approx(100 * 4 / 7)
    either = evaluate_semantic_folders(gt, pred, 847, 65535)  # the default: detectron2 v0.6
    assert either["n"] == 6 and either["mIoU"] < out["mIoU"]  # classes 2 and 9 are only predicted

    (pred / "b.png").unlink()
    with pytest.raises(DatasetError, match="No prediction for b.png"):
        evaluate_semantic_folders(gt, pred, 847, 65535)
    Image.fromarray(np.array([[1, 9]], dtype=np.uint8)).save(pred / "b.png")
    with pytest.raises(DatasetError, match="a.tif.*class 65535"):
        evaluate_semantic_folders(gt, pred, 847, 255)
