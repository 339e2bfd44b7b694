"""PQ takes ground-truth segments and areas from the JSON ``segments_info`` as the COCO panoptic API
does (issue #14): a listed stuff segment without pixels is a false negative, and a JSON ``area``
that is not the pixel count (ADE20K-150's stuff areas, counted before things were pasted) enters
the union. Checked against ``pq_compute`` for ``odise-pl eval panoptic`` and the Metric class."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from odise_pl.cli import main
from odise_pl.metrics.panoptic_io import PanopticCategories, segments_from_json
from odise_pl.metrics.panoptic_quality import PanopticQuality

from .synthetic_panoptic import CATEGORIES, IS_THING, perturb, random_panoptic, reference_pq, write_panoptic

SKY, WALL, PERSON = 4, 5, 0  # contiguous: two stuff categories and a thing


def _hand_case():
    """One image: sky (listed area 100, 60 pixels), wall (listed area 20, no pixel), a person.

    The exact prediction of the visible pixels: sky matches with IoU 60 / 100, the person with 1,
    wall is a false negative. Counting pixels instead would give sky IoU 1 and no wall segment.
    """
    ids = np.zeros((10, 10), np.int64)
    ids[:6] = 1  # sky
    ids[6:, 2:8] = 3  # person
    gt = [
        {"id": 1, "category": SKY, "iscrowd": 0, "area": 100},
        {"id": 2, "category": WALL, "iscrowd": 0, "area": 20},
        {"id": 3, "category": PERSON, "iscrowd": 0, "area": 24},
    ]
    pred = [{"id": 1, "category": SKY}, {"id": 3, "category": PERSON}]
    return ids, gt, pred


def _metric_from_json(gt_json, gt_folder, pred_json, pred_folder) -> dict:
    """PanopticQuality fed with the segments of the JSON files, as the training-time metric is."""
    from odise_pl.formats.coco_panoptic import read_panoptic_png

    gt_data, pred_data = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    categories = PanopticCategories.from_json(gt_data["categories"])
    index_of = categories.index_of()
    preds = {a["image_id"]: a for a in pred_data["annotations"]}
    metric = PanopticQuality(is_thing=categories.is_thing)
    for gt_ann in gt_data["annotations"]:
        pred_ann = preds[gt_ann["image_id"]]
        metric.update(
            torch.from_numpy(read_panoptic_png(pred_folder / pred_ann["file_name"]).astype(np.int64)),
            segments_from_json(pred_ann["segments_info"], index_of, "pred"),
            torch.from_numpy(read_panoptic_png(gt_folder / gt_ann["file_name"]).astype(np.int64)),
            segments_from_json(gt_ann["segments_info"], index_of, "gt"),
        )
    return {k: float(v) for k, v in metric.compute().items()}


def _eval_cli(capsys, tmp_path, gt_json, gt_folder, pred_json, pred_folder) -> dict:
    out = tmp_path / "ours.json"
    assert (
        main(
            [
                "eval",
                "panoptic",
                "--gt-json",
                str(gt_json),
                "--gt-folder",
                str(gt_folder),
                "--pred-json",
                str(pred_json),
                "--pred-folder",
                str(pred_folder),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    written = capsys.readouterr().out.split("results written to ")[1].split()[0]  # never over an earlier one
    assert written == str(out) or not written.endswith("ours.json")
    return json.loads(Path(written).read_text())


def _assert_same(ours: dict, api: dict) -> None:
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert ours[key.upper() + suffix] == pytest.approx(100 * api[name][key], abs=1e-6), key + suffix
        assert ours["n" + suffix] == api[name]["n"]


def test_zero_pixel_stuff_and_json_area_follow_pq_compute(tmp_path, capsys, monkeypatch):
    ids, gt, pred = _hand_case()
    gt_json, gt_folder = write_panoptic(tmp_path, "gt", [(1, ids, gt)])
    pred_json, pred_folder = write_panoptic(tmp_path, "pred", [(1, ids, pred)])
    from panopticapi import evaluation  # the API's own entry point, one worker

    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 1)
    with contextlib.redirect_stdout(io.StringIO()):
        api = evaluation.pq_compute(str(gt_json), str(pred_json), str(gt_folder), str(pred_folder))
    # by hand: person PQ 1; sky SQ 0.6, RQ 1; wall: one FN, PQ 0 -> stuff PQ (0.6 + 0) / 2
    assert api["Stuff"]["pq"] == pytest.approx(0.3) and api["Things"]["pq"] == pytest.approx(1.0)
    assert api["All"]["n"] == 3
    ours = _eval_cli(capsys, tmp_path, gt_json, gt_folder, pred_json, pred_folder)
    _assert_same(ours, api)
    assert ours["per_class"][str(CATEGORIES[WALL]["id"])]["FN"] == 1
    _assert_same(_metric_from_json(gt_json, gt_folder, pred_json, pred_folder), api)

    # the JSON area can move a segment below the IoU threshold: 60 / 130 < 0.5 -> FN + FP
    gt[0]["area"] = 130
    gt_json, _ = write_panoptic(tmp_path, "gt", [(1, ids, gt)])
    api = reference_pq(gt_json, gt_folder, pred_json, pred_folder)
    assert api["stat"][CATEGORIES[SKY]["id"]][1:] == (0, 1, 1)
    _assert_same(_eval_cli(capsys, tmp_path, gt_json, gt_folder, pred_json, pred_folder), api)
    _assert_same(_metric_from_json(gt_json, gt_folder, pred_json, pred_folder), api)


def test_random_json_areas_match_pq_compute(tmp_path, capsys):
    rng = np.random.default_rng(21)
    gts, preds = [], []
    for image_id in range(1, 7):
        ids, segs = random_panoptic(rng, 40, 48)
        for seg in segs:  # larger than the pixel count, as a stuff area before the things were pasted
            pixels = int((ids == seg["id"]).sum())
            seg["area"] = pixels + int(rng.integers(0, pixels + 5))
        gts.append((image_id, ids, segs))
        preds.append((image_id, *perturb(rng, ids, segs, strength=2)))
    gt_json, gt_folder = write_panoptic(tmp_path, "gt", gts)
    pred_json, pred_folder = write_panoptic(tmp_path, "pred", preds)
    api = reference_pq(gt_json, gt_folder, pred_json, pred_folder)
    ours = _eval_cli(capsys, tmp_path, gt_json, gt_folder, pred_json, pred_folder)
    _assert_same(ours, api)
    for cat_id, (_, tp, fp, fn) in api["stat"].items():
        row = ours["per_class"][str(cat_id)]
        assert (row["TP"], row["FP"], row["FN"]) == (tp, fp, fn)
    _assert_same(_metric_from_json(gt_json, gt_folder, pred_json, pred_folder), api)
    # counting pixels would not give the API's numbers here
    counted = PanopticQuality(is_thing=IS_THING)
    for (_, ids, gt), (_, pred_ids, pred) in zip(gts, preds):
        counted.update(torch.from_numpy(pred_ids), pred, torch.from_numpy(ids), [{k: v for k, v in s.items() if k != "area"} for s in gt])
    assert float(counted.compute()["PQ"]) != pytest.approx(100 * api["All"]["pq"], abs=1e-3)


def test_a_bad_area_is_named():
    ids, gt, pred = _hand_case()
    gt[0]["area"] = -5
    metric = PanopticQuality(is_thing=IS_THING)
    from odise_pl.errors import DatasetError

    with pytest.raises(DatasetError, match=r"segments \[1\] have a negative 'area'"):
        metric.update(torch.from_numpy(ids), pred, torch.from_numpy(ids), gt)
