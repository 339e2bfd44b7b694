"""A converted FC-CLIP checkpoint is a run directory that `predict`, `test --sets` and `fit --init-from` accept.

The released format at the fixture's tiny size: the official code's `fcclip_tiny_ref.pth` without its
`backbone.clip_model.*` keys (what `fcclip_cocopan.pth` lacks), converted with
`experiments/reference/fcclip_fixture.yaml`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from odise_pl.cli import main

REPO = Path(__file__).resolve().parents[2]
REF = REPO.parent / "shared" / "fcclip_fixture" / "fcclip_tiny_ref.pth"
EXPERIMENT = str(REPO / "experiments" / "reference" / "fcclip_fixture.yaml")

pytestmark = pytest.mark.skipif(not REF.is_file(), reason="needs ../shared/fcclip_fixture")


def test_converted_tiny_release_predicts_tests_and_fine_tunes(tmp_path, capsys):
    full = torch.load(REF, map_location="cpu", weights_only=True)
    released = {k: v for k, v in full.items() if not k.startswith("backbone.clip_model.")}
    assert len(full) - len(released) == 87  # the tiny CLIP (fcclip_keys_tiny.json)
    pth = tmp_path / "fcclip_tiny_released.pth"
    torch.save({"model": released, "iteration": 1}, pth)
    out = tmp_path / "converted"
    assert main(["convert-reference", "--fcclip-ckpt", str(pth), "-c", EXPERIMENT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("backbone.clip_model.") == 1, printed
    categories = json.loads((out / "categories.json").read_text())["categories"]
    assert len(categories) == 133 and "children" in categories[0]["synonyms"]

    images = sorted((REPO / "notebooks" / "data").rglob("*.jpg"))[:1]
    assert images, "the notebooks' COCO photos are missing"
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(out),
                "--input",
                str(images[0]),
                "--out",
                str(pred),
                "--vocab",
                "person;dog;grass:stuff",
                "--no-default-vocab",
                "--device",
                "cpu",
                "data.eval_short_side=96",
                "data.eval_max_long_side=128",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert any(pred.iterdir())

    from odise_pl.app.session import DemoSession  # the web demo's model side serves it too

    session = DemoSession.open(out, overrides=["data.eval_short_side=96", "data.eval_max_long_side=128"], device="cpu")
    try:
        for classifier in ("in_vocab", "diffusion", "ensemble"):  # diffusion: the old name, still accepted
            result = session.segment(images[0], "person;dog;grass:stuff", classifier=classifier)
            used = {result.class_names[s["category_id"]] for s in result.prediction.segments}
            assert used <= {"person", "dog", "grass"}
            assert all(Path(f).is_file() for f in result.files)
    finally:
        session.close()

    data = tmp_path / "eval_set"  # generated scenes in the COCO panoptic layout
    assert main(["data", "synth", "--out", str(data), "--num-train", "4", "--num-val", "2", "--image-size", "64"]) == 0
    evaluation = [
        f"data.root={data}",
        "data.vocabulary=null",
        "data.vocabulary_variant=null",
        "data.num_workers=0",
        "data.eval_short_side=64",
        "data.eval_max_long_side=64",
        "trainer.enable_progress_bar=false",
    ]
    assert main(["test", *evaluation, "--ckpt", str(out), "--sets", "config"]) == 0, capsys.readouterr().err
    table = next(out.glob("test_sets_*.md")).read_text()
    assert table.startswith("model: fcclip_fixture (clip backbone, fcclip_label supervision, classifier ensemble)")
    assert "| 64/64 |" in table

    fine = [
        *evaluation,
        "data.name=coco_panoptic",
        "data.batch_size=2",
        "data.crop_size=64",
        f"run.root={tmp_path / 'runs'}",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "checkpoint.every_n_steps=0",
        "logging.tensorboard=false",
    ]
    assert main(["fit", "-c", EXPERIMENT, "--init-from", str(out), *fine]) == 0, capsys.readouterr().err
    results = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert results["init_from"] == str(out)
    shutil.rmtree(tmp_path / "runs")
