"""Evaluation on sets of your own (``odise-pl test --sets NAME=SET.yaml``): the shipped example of
``examples/custom_dataset`` (the two COCO photos, five classes) as a semantic and a panoptic set."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from odise_pl.cli import main
from odise_pl.engine.evaluate import parse_set

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_dataset"
TINY = [
    "data.num_train=2",
    "data.num_val=2",
    "data.image_size=64",
    "data.crop_size=64",
    "data.eval_short_side=64",
    "data.eval_max_long_side=96",
    "data.num_workers=0",
    "data.eval_batch_size=2",
    "model.mask_generator.num_queries=6",
    "model.mask_generator.dec_layers=1",
    "logging.tensorboard=false",
]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> tuple[list[str], Path]:
    """A random-weight quickstart model as a .safetensors file, and the overrides it was built with."""
    from odise_pl.config import load_config
    from odise_pl.engine.checkpoints import export_safetensors
    from odise_pl.engine.components import build_all

    tmp = tmp_path_factory.mktemp("tiny")
    overrides = [f"data.root={tmp / 'synth'}", f"run.root={tmp / 'runs'}", *TINY]
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", overrides)
    _, model = build_all(cfg)
    return overrides, export_safetensors(model, tmp / "w" / "weights.safetensors")


def test_semantic_and_panoptic_sets_of_your_own_are_scored(tiny_weights, tmp_path, capsys):
    overrides, ckpt = tiny_weights
    example = tmp_path / "example"  # a copy: the set files' relative paths follow them
    shutil.copytree(EXAMPLE, example)
    capsys.readouterr()
    assert (
        main(
            [
                "test",
                "-c",
                str(REPO / "experiments" / "quickstart.yaml"),
                *overrides,
                "--ckpt",
                str(ckpt),
                "--sets",
                f"mine={example / 'semantic.yaml'}",
                str(example / "panoptic.yaml"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("| set |"))
    assert head.startswith("| set | classes | PQ |") and "| mIoU |" in head and "| pACC |" in head
    rows = {r["set"]: r for r in csv.DictReader(next(ckpt.parent.glob("test_sets_*.csv")).open())}
    assert list(rows) == ["mine", "panoptic"]
    assert rows["mine"]["classes"] == rows["panoptic"]["classes"] == "5"
    assert rows["mine"]["PQ"] == "" and rows["panoptic"]["PQ"] != ""  # PQ only where there is panoptic GT
    for row in rows.values():
        assert 0 <= float(row["mIoU"]) <= 100 and 0 < float(row["pACC"]) <= 100
    assert "| mine | 5 | - |" in out
    # the same ground truth both ways (label PNGs vs. panoptic PNG + JSON), the same model and names:
    # the semantic scores agree to the last digit
    assert (rows["mine"]["mIoU"], rows["mine"]["pACC"]) == (rows["panoptic"]["mIoU"], rows["panoptic"]["pACC"])


def test_set_files_keep_their_own_keys_and_paths():
    name, kwargs = parse_set(f"mine={EXAMPLE / 'semantic.yaml'}")
    assert name == "mine" and kwargs["name"] == "semantic_seg" and kwargs["dataset"] == "custom"
    assert Path(kwargs["root"]) == EXAMPLE and Path(kwargs["vocabulary"]) == EXAMPLE / "vocabulary.txt"
    assert "eval_short_side" not in kwargs  # the experiment's test size applies, as for the builtin sets
    name, kwargs = parse_set(str(EXAMPLE / "panoptic.yaml"))
    assert name == "panoptic" and kwargs["vocabulary"] == str(EXAMPLE / "synonyms.txt")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data:\n  name: semantic_seg\n  dataset: custom\n  lable_dir: x\n", r"set\.yaml: unknown key 'data\.lable_dir' \(line 4\)"),
        ("data:\n  name: semantic_seg\n  dataset: cusstom\n", r"set\.yaml: 'data\.dataset' must be one of .*custom.* \(line 3\)"),
        ("data:\n  dataset: custom\n", r"set\.yaml: 'data' has no 'name' \(line 1\)"),
        ("data:\n  name: semantic_seg\nmodel: {}\n", r"set\.yaml: unknown key 'model' \(line 3\)"),
        ("- data\n", r"set\.yaml: a set file holds one 'data:' section"),
    ],
)
def test_bad_set_files_are_one_error_line_naming_file_key_and_line(tmp_path, capsys, text, expected):
    (tmp_path / "set.yaml").write_text(text)
    assert (
        main(
            [
                "test",
                "--ckpt",
                str(tmp_path / "missing.safetensors"),
                "-c",
                str(REPO / "experiments" / "quickstart.yaml"),
                "--sets",
                f"mine={tmp_path / 'set.yaml'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("odise-pl: error: ") and "Traceback" not in err
    assert re.search(expected, err), err


def test_a_missing_set_file_is_named(tmp_path, capsys):
    assert (
        main(
            [
                "test",
                "--ckpt",
                str(tmp_path / "w.safetensors"),
                "-c",
                str(REPO / "experiments" / "quickstart.yaml"),
                "--sets",
                f"mine={tmp_path / 'nope.yml'}",
            ]
        )
        == 2
    )
    assert f"set file {tmp_path / 'nope.yml'} does not exist" in capsys.readouterr().err


def test_a_missing_vocabulary_file_is_named_before_the_model_loads(tiny_weights, tmp_path, capsys):
    overrides, ckpt = tiny_weights
    shutil.copytree(EXAMPLE, tmp_path / "example")
    (tmp_path / "example" / "vocabulary.txt").unlink()
    assert (
        main(
            [
                "test",
                "-c",
                str(REPO / "experiments" / "quickstart.yaml"),
                *overrides,
                "--ckpt",
                str(ckpt),
                "--sets",
                f"mine={tmp_path / 'example' / 'semantic.yaml'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"odise-pl: error: vocabulary file '{tmp_path / 'example' / 'vocabulary.txt'}' not found")


def test_a_panoptic_set_without_synonyms_takes_the_json_names(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.engine.evaluate import set_datamodule

    shutil.copytree(EXAMPLE, tmp_path / "example")
    set_file = tmp_path / "example" / "panoptic.yaml"
    set_file.write_text("\n".join(line for line in set_file.read_text().splitlines() if "vocabulary" not in line))
    dm = set_datamodule(load_config(REPO / "experiments" / "quickstart.yaml"), parse_set(str(set_file))[1])
    assert [(c["id"], c["name"], c["isthing"]) for c in dm.categories] == [
        (1, "person", True),
        (2, "horse", True),
        (3, "tree", False),
        (4, "sky", False),
        (5, "grass", False),
    ]
