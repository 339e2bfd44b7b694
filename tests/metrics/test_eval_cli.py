"""``odise-pl eval panoptic|semantic`` (issue #10): parity with the COCO panoptic API's pq_compute,
the API's printed table, hand-computed values, uint16 semantic labels, and file errors."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing

import numpy as np
import pytest
from PIL import Image

from odise_pl.cli import main

from .synthetic_panoptic import perturb, random_panoptic, reference_pq, write_panoptic

TWO_CATEGORIES = [{"id": 7, "name": "sky", "isthing": 0}, {"id": 1, "name": "person", "isthing": 1}]


def _eval(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(["eval", *argv]) == 0
    return capsys.readouterr().out


def _panoptic_args(gt_json, gt_folder, pred_json, pred_folder, *extra) -> list[str]:
    return [
        "panoptic",
        "--gt-json",
        str(gt_json),
        "--gt-folder",
        str(gt_folder),
        "--pred-json",
        str(pred_json),
        "--pred-folder",
        str(pred_folder),
        *extra,
    ]


def test_panoptic_equals_pq_compute_and_prints_its_table(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(11)
    gts, preds = [], []
    for image_id in range(1, 9):
        ids, segs = random_panoptic(rng, 40, 56)
        gts.append((image_id, ids, segs))
        preds.append((image_id, *perturb(rng, ids, segs, strength=3)))
    gt_json, gt_folder = write_panoptic(tmp_path, "gt", gts)
    pred_json, pred_folder = write_panoptic(tmp_path, "pred", preds)

    out = _eval(capsys, _panoptic_args(gt_json, gt_folder, pred_json, pred_folder, "--per-class", "--out", str(tmp_path / "r.json")))
    ours = json.loads((tmp_path / "r.json").read_text())

    # The API's own entry point, its process pool forced to one worker.
    from panopticapi import evaluation

    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        api = evaluation.pq_compute(str(gt_json), str(pred_json), str(gt_folder), str(pred_folder))
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert ours[key.upper() + suffix] == pytest.approx(100 * api[name][key], abs=1e-6)
        assert ours["n" + suffix] == api[name]["n"]
    for cat_id, row in api["per_class"].items():
        assert ours["per_class"][str(cat_id)]["PQ"] == pytest.approx(100 * row["pq"], abs=1e-6)
    assert 0 < ours["PQ"] < 100
    # per-category TP/FP/FN from the API's single-core loop
    ref = reference_pq(gt_json, gt_folder, pred_json, pred_folder)
    for cat_id, (_, tp, fp, fn) in ref["stat"].items():
        row = ours["per_class"][str(cat_id)]
        assert (row["TP"], row["FP"], row["FN"]) == (tp, fp, fn)

    api_table = [line for line in printed.getvalue().splitlines() if "|" in line or set(line) == {"-"}]
    assert out.splitlines()[:5] == api_table
    assert "cat1 [th]" in out and "cat30 [st]" in out  # --per-class rows


def test_perfect_prediction_scores_100(tmp_path, capsys):
    rng = np.random.default_rng(12)
    gts, preds = [], []
    for image_id in range(1, 4):
        ids, segs = random_panoptic(rng)
        gts.append((image_id, ids, [s for s in segs if (ids == s["id"]).any()]))  # no pixel-less GT segment
        preds.append((image_id, *perturb(rng, ids, segs, strength=0)))  # same map, fresh ids, crowd included
    gt_json, _ = write_panoptic(tmp_path, "gt", gts)
    pred_json, _ = write_panoptic(tmp_path, "pred", preds)
    # folders default to the JSON path without .json, as in the API
    _eval(capsys, ["panoptic", "--gt-json", str(gt_json), "--pred-json", str(pred_json), "--out", str(tmp_path / "r.json")])
    ours = json.loads((tmp_path / "r.json").read_text())
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert ours[key] == 100.0, key
    # the same --out again: an earlier result is never overwritten, the new one goes beside it
    (tmp_path / "r.json").write_text('{"kept": true}')
    _eval(capsys, ["panoptic", "--gt-json", str(gt_json), "--pred-json", str(pred_json), "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == {"kept": True}
    assert json.loads((tmp_path / "r.1.json").read_text())["PQ"] == 100.0


def _write(folder, name, ids, segments):
    folder.mkdir(exist_ok=True)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / f"{name}.png")
    return {"image_id": 1, "file_name": f"{name}.png", "segments_info": segments}


def test_known_imperfect_prediction_scores_the_hand_computed_value(tmp_path, capsys):
    # GT: sky (12 px), person 2 (4 px), person 3 (4 px), VOID (4 px).
    gt = np.array([[1] * 6, [1] * 6, [2, 2, 3, 3, 0, 0], [2, 2, 3, 3, 0, 0]])
    # Prediction: sky exact (IoU 1); person 12 = GT 2 + half of GT 3 (IoU 4/6: match); person 13 = the
    # other half of GT 3 (IoU 2/4 = 0.5: no match -> FP, and GT 3 is a FN); person 14 lies on VOID
    # only (ignored, not a FP).
    pred = np.array([[11] * 6, [11] * 6, [12, 12, 12, 13, 14, 14], [12, 12, 12, 13, 14, 14]])
    gt_segs = [
        {"id": 1, "category_id": 7, "iscrowd": 0, "area": 12},
        {"id": 2, "category_id": 1, "iscrowd": 0, "area": 4},
        {"id": 3, "category_id": 1, "iscrowd": 0, "area": 4},
    ]
    pred_segs = [{"id": i, "category_id": c} for i, c in ((11, 7), (12, 1), (13, 1), (14, 1))]
    for name, ids, segs in (("gt", gt, gt_segs), ("pred", pred, pred_segs)):
        ann = _write(tmp_path / name, "x", ids, segs)
        data = {"annotations": [ann], "categories": TWO_CATEGORIES}
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = _eval(
        capsys,
        [
            "panoptic",
            "--gt-json",
            str(tmp_path / "gt.json"),
            "--pred-json",
            str(tmp_path / "pred.json"),
            "--per-class",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    r = json.loads((tmp_path / "r.json").read_text())
    person, sky = r["per_class"]["1"], r["per_class"]["7"]
    assert (person["TP"], person["FP"], person["FN"]) == (1, 1, 1)
    assert person["PQ"] == pytest.approx(100 / 3) and person["SQ"] == pytest.approx(200 / 3)
    assert person["RQ"] == pytest.approx(50) and sky["PQ"] == pytest.approx(100)
    assert r["PQ"] == pytest.approx((100 / 3 + 100) / 2) and r["SQ"] == pytest.approx((200 / 3 + 100) / 2)
    assert r["RQ"] == pytest.approx(75) and r["PQ_th"] == pytest.approx(100 / 3) and r["PQ_st"] == 100
    assert "All       |  66.7   83.3   75.0     2" in out
    ref = reference_pq(tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred")
    assert r["PQ"] == pytest.approx(100 * ref["All"]["pq"], abs=1e-9)


def test_semantic_uint16_labels_keep_255_as_a_class(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    Image.fromarray(np.array([[255, 255, 65535], [0, 299, 299]], np.uint16)).save(gt / "a.tif")
    Image.fromarray(np.array([[255, 9, 7], [0, 299, 299]], np.uint16)).save(pred / "a.tif")
    args = ["semantic", "--gt-folder", str(gt), "--pred-folder", str(pred), "--num-classes", "300", "--ignore-label", "65535"]
    out = _eval(capsys, [*args, "--per-class", "--miou-average", "gt_present", "--out", str(tmp_path / "gt_present.json")])
    r = json.loads((tmp_path / "gt_present.json").read_text())
    # class 255: IoU 1/2, class 0: 1/1, class 299: 2/2; class 9 is only predicted; 7 lies on ignore.
    assert r["n"] == 3 and r["mIoU"] == pytest.approx(100 * 2.5 / 3) and r["pACC"] == pytest.approx(80)
    assert r["IoU"][255] == pytest.approx(50) and r["IoU"][9] == 0 and r["IoU"][7] is None
    assert r["average"] == "gt_present" and "detectron2 after f3c1bc19, no release: classes in GT" in out
    assert "  255  255" in out  # per-class row of class 255
    out = _eval(capsys, [*args, "--out", str(tmp_path / "either.json")])  # the default: detectron2 v0.6
    r = json.loads((tmp_path / "either.json").read_text())
    assert r["n"] == 4 and r["mIoU"] == pytest.approx(100 * 2.5 / 4) and r["average"] == "either_present"
    assert "detectron2 v0.6: classes in GT or prediction" in out


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odise-pl: error: ") and "Traceback" not in err, err
    return err


def test_errors_name_the_file_and_what_to_do(tmp_path, capsys):
    gt = np.array([[1, 1], [2, 0]])
    gt_segs = [{"id": 1, "category_id": 7, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0}]
    ann = _write(tmp_path / "gt", "x", gt, gt_segs)
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": [ann], "categories": TWO_CATEGORIES}))
    ann = _write(tmp_path / "pred", "x", gt, gt_segs[:1])  # id 2 is in the PNG, not in the JSON
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": [ann]}))
    base = ["panoptic", "--gt-json", str(tmp_path / "gt.json"), "--pred-json", str(tmp_path / "pred.json")]

    err = _error(capsys, base)
    assert "image id 1" in err and "predicted map holds segment ids [2]" in err
    assert str(tmp_path / "pred" / "x.png") in err and "must list the same segment ids" in err

    (tmp_path / "pred" / "x.png").unlink()
    assert f"panoptic PNG {tmp_path / 'pred' / 'x.png'} does not exist" in _error(capsys, base)
    assert "missing.json does not exist" in _error(capsys, [*base[:-1], str(tmp_path / "missing.json")])
    err = _error(capsys, [*base, "--pred-folder", str(tmp_path / "nowhere")])
    assert "prediction PNG folder" in err and "nowhere" in err
    err = _error(
        capsys,
        [
            "semantic",
            "--gt-folder",
            str(tmp_path / "gt"),
            "--pred-folder",
            str(tmp_path / "gt"),
            "--num-classes",
            "3",
            "--ignore-label",
            "x",
        ],
    )
    assert "--ignore-label must be an integer" in err
