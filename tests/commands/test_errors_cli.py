"""User errors through the command line (issue #2): exit code 2 and a message naming the culprit.

Data-module-level errors (a PNG segment id missing from the JSON, a corrupt image, a malformed
JSON, a missing image folder) are tested in ``tests/data_modules/test_coco_panoptic.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from odise_pl.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def _run(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    # (what precedes the message is other output, e.g. lightning's "Seed set to 0" log line)
    assert "odise-pl: error: " in err, err
    message = err[err.index("odise-pl: error: ") :]
    assert "Traceback" not in message, message
    return message


def test_unknown_key_in_a_file_names_file_key_line_and_closest_key(tmp_path, capsys):
    exp = tmp_path / "my_experiment.yaml"
    exp.write_text(f"_base_: {QUICKSTART}\nseed: 1\ntrainer:\n  max_stepz: 3\n")
    for command in (["config"], ["fit"]):
        err = _run(capsys, [*command, "-c", str(exp), f"run.root={tmp_path / 'runs'}"])
        assert str(exp) in err or exp.name in err, err
        assert "trainer.max_stepz" in err and "line 4" in err, err
        assert "Did you mean 'trainer.max_steps'" in err, err
    assert not (tmp_path / "runs").exists()  # nothing written before the config is valid


def test_unknown_key_in_an_override_names_it_and_the_closest_key(tmp_path, capsys):
    err = _run(capsys, ["fit", "-c", str(QUICKSTART), f"run.root={tmp_path / 'runs'}", "model.mask_generator.hiden_dim=32"])
    assert "model.mask_generator.hiden_dim=32" in err, err
    assert "Did you mean 'model.mask_generator.hidden_dim'" in err, err


def test_missing_dataset_folder_names_path_and_expected_layout(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    err = _run(
        capsys,
        [
            "fit",
            "-c",
            str(QUICKSTART),
            "data.name=coco_panoptic",
            f"data.root={missing}",
            f"run.root={tmp_path / 'runs'}",
            "trainer.accelerator=cpu",
        ],
    )
    assert f"dataset root {missing} does not exist" in err, err
    assert f"Expected COCO panoptic layout under data.root={missing}" in err, err
    for entry in (
        "train2017/",
        "panoptic_train2017/",
        "annotations/panoptic_train2017.json",
        "val2017/",
        "panoptic_val2017/",
        "annotations/panoptic_val2017.json",
    ):
        assert entry in err, entry

    ckpt = tmp_path / "some.ckpt"
    ckpt.write_bytes(b"")  # evaluate checks the checkpoint path first; the data error comes before loading
    err = _run(
        capsys,
        [
            "validate",
            "-c",
            str(QUICKSTART),
            "data.name=coco_panoptic",
            "data.root=/nonexistent",
            "trainer.accelerator=cpu",
            "--ckpt",
            str(ckpt),
        ],
    )
    assert "dataset root /nonexistent does not exist" in err, err
    assert "annotations/panoptic_val2017.json" in err, err


def test_missing_checkpoint_is_named(tmp_path, capsys):
    err = _run(capsys, ["validate", "-c", str(QUICKSTART), "--ckpt", str(tmp_path / "nope.ckpt")])
    assert f"checkpoint '{tmp_path / 'nope.ckpt'}' not found" in err, err


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``odise-pl ARGS`` in a child process, offline (no hub look-up can rescue a wrong path)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "odise_pl.cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.mark.parametrize(
    "backbone, key, missing, names",
    [
        ("clip", "model.clip.pretrained", "weights/clip.bin", "CLIP weights"),
        ("diffusion_unet", "model.backbone.pretrained", "weights/sd", "Stable Diffusion weights"),  # diffusers dir
        ("diffusion_unet", "model.backbone.pretrained", "weights/sd-v1-3.ckpt", "Stable Diffusion weights"),  # LDM file
        ("mae", "model.backbone.pretrained", "weights/mae", "ViTMAE"),
        ("dino", "model.backbone.pretrained", "weights/dino", "DINO"),
    ],
)
def test_missing_pretrained_weights_are_one_error_line_naming_key_and_path(tmp_path, backbone, key, missing, names):
    """A wrong weights path is an ``odise-pl: error:`` line naming the key and the path, exit 2, no traceback."""
    path = tmp_path / missing
    backbone = [f"model.backbone.name={backbone}"] if backbone != "clip" else []
    result = _cli(
        [
            "fit",
            "-c",
            str(QUICKSTART),
            f"run.root={tmp_path / 'runs'}",
            f"data.root={tmp_path / 'data'}",
            "data.num_train=2",
            "data.num_val=1",
            *backbone,
            f"{key}={path}",
        ],
        tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = next(x for x in result.stderr.splitlines() if x.startswith("odise-pl: error: "))
    assert key in line and str(path) in line and names in line, line
