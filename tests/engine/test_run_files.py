"""A run directory (config.yaml + categories.json + weights.safetensors) predicts and tests without its
training data (issue #14, items 3 and 5).

One tiny run on generated shapes; then the data folder is moved away (predict must not read, nor
regenerate, any of it) or only its training split is deleted (test reads the validation split only),
and the outputs are compared with those made while the data was present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from odise_pl.cli import main
from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")
#: seen (training) classes and unseen ones, so the ensemble's seen split matters
VOCAB = "circle;square;triangle;sky:stuff;grass:stuff;ball;tree:stuff"
PREDICT = ["--vocab", VOCAB, "--no-default-vocab", "--device", "cpu"]
ENSEMBLE = "model.inference.classifier=ensemble"  # an override: after the options
TRAIN_SPLIT = ("train2017", "panoptic_train2017", "annotations/panoptic_train2017.json", "annotations/captions_train2017.json")


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.endswith("_overlay.png")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run, and the prediction of a validation image made with the data present."""
    root = tmp_path_factory.mktemp("rundir")
    overrides = micro_run(root, steps=2)
    assert main(["fit", "-c", QUICKSTART, *overrides]) == 0
    run_dir = root / "runs" / "quickstart" / "version_0"
    images = root / "images"
    images.mkdir()
    for path in sorted((root / "data" / "val2017").iterdir())[:1]:
        shutil.copy(path, images / path.name)
    with_data = root / "pred_with_data"
    assert (
        main(
            [
                "predict",
                "-c",
                QUICKSTART,
                "--ckpt",
                str(run_dir / "checkpoints" / "last.ckpt"),
                "--input",
                str(images),
                "--out",
                str(with_data),
                *PREDICT,
                *overrides,
                ENSEMBLE,
            ]
        )
        == 0
    )
    return {"root": root, "overrides": overrides, "run_dir": run_dir, "images": images, "with_data": _outputs(with_data)}


def _dm_categories(overrides):
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_datamodule

    dm = build_datamodule(load_config(QUICKSTART, overrides))
    return dm.categories, dm.ignore_index


def test_fit_writes_the_categories_beside_the_config_and_into_every_checkpoint(run):
    from safetensors import safe_open

    from odise_pl.engine.checkpoints import read_checkpoint
    from odise_pl.engine.run_files import SAFETENSORS_KEY, load_run_directory, read_categories

    categories, ignore_index = _dm_categories(run["overrides"])
    run_dir = run["run_dir"]
    saved = read_categories(run_dir)
    assert saved.categories == categories and saved.ignore_index == ignore_index == 255
    assert [c["name"] for c in categories][:2] == ["circle", "square"] and categories[5]["isthing"] is False
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["odise_pl"] == {"categories": categories, "ignore_index": 255}
    with safe_open(str(run_dir / "weights.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()[SAFETENSORS_KEY])["categories"] == categories

    cfg, loaded, weights = load_run_directory(run_dir, ["model.inference.classifier=clip"])
    assert loaded == categories and weights == run_dir / "weights.safetensors"
    assert cfg.data.num_train == 8 and cfg.model.inference.classifier == "clip"


def test_categories_json_round_trips(tmp_path):
    from odise_pl.engine.run_files import read_categories, write_categories

    categories = [
        {"id": 7, "name": "café table", "synonyms": ["table", "desk"], "isthing": True, "color": [1, 2, 3]},
        {"id": 3, "name": "sky", "synonyms": [], "isthing": False},
    ]
    path = write_categories(tmp_path / "run", categories, ignore_index=65535)
    assert path == tmp_path / "run" / "categories.json"
    assert [p.name for p in path.parent.iterdir()] == ["categories.json"]  # no temporary file left
    back = read_categories(path)
    assert back.categories == categories and back.ignore_index == 65535
    path.write_text(json.dumps([{"name": "cat", "isthing": 1}]))  # a bare list, ids and synonyms omitted
    bare = read_categories(tmp_path / "run")
    assert bare.categories == [{"id": 0, "name": "cat", "isthing": True, "synonyms": []}]
    assert bare.ignore_index is None


def test_predict_and_test_without_the_training_data(run, tmp_path, capsys):
    from odise_pl.engine.predictor import Predictor

    root, run_dir = run["root"], run["run_dir"]
    data = root / "data"
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    data_here = [f"data.root={data}"]  # the run's config names it already; given to be explicit
    moved = root / "data_moved"
    data.rename(moved)
    try:
        for ckpt in (run_dir, run_dir / "weights.safetensors", run_dir / "checkpoints" / "last.ckpt"):
            out = tmp_path / ckpt.name
            assert main(["predict", "--ckpt", str(ckpt), "--input", str(run["images"]), "--out", str(out), *PREDICT, ENSEMBLE]) == 0, (
                capsys.readouterr().err
            )
            assert _outputs(out) == run["with_data"], ckpt
        lone = tmp_path / "elsewhere" / "model.safetensors"  # no run directory: categories from its metadata
        lone.parent.mkdir()
        shutil.copy(run_dir / "weights.safetensors", lone)
        assert (
            main(
                [
                    "predict",
                    "-c",
                    QUICKSTART,
                    "--ckpt",
                    str(lone),
                    "--input",
                    str(run["images"]),
                    "--out",
                    str(tmp_path / "lone"),
                    *PREDICT,
                    *run["overrides"],
                    ENSEMBLE,
                ]
            )
            == 0
        )
        assert _outputs(tmp_path / "lone") == run["with_data"]
        predictor = Predictor.from_config_file(None, run_dir, device="cpu")  # the training vocabulary
        assert predictor.vocabulary.names[:3] == ["circle", "square", "triangle"]
        assert predictor.predict_file(next(run["images"].iterdir())).segments
        assert not data.exists(), "predicting read (and regenerated) the dataset"
    finally:
        moved.rename(data)

    for part in TRAIN_SPLIT:  # test reads the validation split only
        target = data / part
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert main(["test", "--ckpt", str(run_dir), *data_here]) == 0
    tested = json.loads((run_dir / "eval_test_0.json").read_text())
    assert tested["test"] == pytest.approx(final, abs=1e-6) and tested["checkpoint"] == str(run_dir)
    assert main(["test", "--ckpt", str(run_dir), *data_here, "--sets", "config"]) == 0
    table = (run_dir / "test_sets_0.csv").read_text().splitlines()
    assert table[1].startswith("config,10,") and f"{final['PQ']:.4f}" in table[1]
    assert not (data / "train2017").exists()


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def test_a_broken_run_directory_is_named(run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(run["run_dir"], broken, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    argv = ["predict", "--ckpt", str(broken), "--input", str(run["images"]), "--out", str(tmp_path / "o"), *PREDICT]

    (broken / "weights.safetensors").rename(tmp_path / "w.safetensors")
    err = _error(capsys, argv)
    assert f"run directory {broken} has no weights.safetensors" in err and "export_safetensors" in err, err
    (tmp_path / "w.safetensors").rename(broken / "weights.safetensors")

    good = (broken / "categories.json").read_text()
    (broken / "categories.json").unlink()
    err = _error(capsys, argv)
    assert f"run directory {broken} has no categories.json" in err and "odise-pl fit writes it" in err, err
    entries = json.loads(good)
    del entries["categories"][3]["isthing"]
    (broken / "categories.json").write_text(json.dumps(entries))
    err = _error(capsys, argv)
    assert f"{broken / 'categories.json'}: category 3 ('star'): 'isthing' must be" in err, err
    (broken / "categories.json").write_text(good[:-20])
    assert f"{broken / 'categories.json'} is not valid JSON" in _error(capsys, argv)
    (broken / "categories.json").write_text(good)

    err = _error(capsys, [*argv, "model.mask_generator.hidden_dim=32", "model.mask_generator.mask_dim=32"])  # refused
    assert "model.mask_generator.hidden_dim: checkpoint 64, now 32" in err, err
    for config in broken.glob("config*.yaml"):
        config.unlink()
    err = _error(capsys, argv)
    assert f"run directory {broken} has no config.yaml" in err, err


def test_fit_init_from_a_run_directory_fine_tunes_a_new_run(run, tmp_path, capsys):
    from odise_pl.engine.checkpoints import read_safetensors

    source = run["run_dir"]
    overrides = [
        f"run.root={tmp_path / 'runs'}",
        "run.name=finetune",
        f"data.root={tmp_path / 'data'}",
        "optim.lr=0",
        "optim.weight_decay=0",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
    ]
    # data.root: the same generated scenes, in a folder of its own
    assert main(["fit", "--init-from", str(source), *overrides]) == 0  # the run's own config, no -c
    out = capsys.readouterr().out
    assert f"starting from the weights of {source}" in out
    new = tmp_path / "runs" / "finetune" / "version_0"
    results = json.loads((new / "metrics.json").read_text())
    assert results["init_from"] == str(source)
    final = json.loads((source / "metrics.json").read_text())["final"]
    assert results["final"] == pytest.approx(final, abs=1e-6)  # lr 0: the source's weights, evaluated again
    assert not (source / "metrics.1.json").exists()  # the source run is untouched
    a, b = read_safetensors(source / "weights.safetensors"), read_safetensors(new / "weights.safetensors")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all((a["state_dict"][k] == b["state_dict"][k]).all() for k in a["state_dict"])


def test_init_weights_takes_the_parameters_when_the_new_data_has_other_categories(run, tmp_path):
    from odise_pl.engine.checkpoints import read_safetensors, trained_state_dict
    from odise_pl.engine.run_files import load_run_directory, training_categories, write_run_directory
    from odise_pl.engine.weights import init_weights
    from odise_pl.errors import CheckpointError
    from odise_pl.models.builder import build_model

    cfg, categories, weights = load_run_directory(run["run_dir"])
    other = [{"id": 1, "name": "boat", "isthing": True}, {"id": 2, "name": "sea", "isthing": False}]
    model = build_model(cfg, other)
    init_weights(model, run["run_dir"])
    source = read_safetensors(weights)["state_dict"]
    params = dict(model.named_parameters())
    assert any(k in params for k in source)
    for key, value in source.items():
        if key in params:
            assert (params[key] == value).all(), key
    assert source["criterion.loss.empty_weight"].shape == (len(categories) + 1,)
    assert model.state_dict()["criterion.loss.empty_weight"].shape == (len(other) + 1,)  # the new model's own

    # what convert-reference writes: a complete run directory that loads back
    out = write_run_directory(tmp_path / "converted", config=cfg, categories=other, model=model, ignore_index=0)
    cfg2, cats2, weights2 = load_run_directory(out)
    assert cfg2 == cfg and [c["name"] for c in cats2] == ["boat", "sea"] and cats2[0]["synonyms"] == []
    from_metadata = training_categories(weights2)
    assert from_metadata.categories == cats2 and from_metadata.ignore_index == 0
    written = read_safetensors(weights2)["state_dict"]
    assert all((written[k] == v).all() for k, v in trained_state_dict(model).items())
    with pytest.raises(CheckpointError, match="already holds config.yaml, categories.json, weights.safetensors"):
        write_run_directory(out, config=cfg, categories=other, model=model)
