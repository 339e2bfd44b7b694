"""FC-CLIP reference parity (issue 23): the official fc-clip code's recorded tensors.

The expected values come from code no one here wrote: ``tests/data/fcclip_fixture`` was produced by
running bytedance/fc-clip itself (see its README). Tolerances are those of
:mod:`odise_pl.reference.fcclip_verify` (float tensors rel. L2 <= 1e-4, discrete outputs by the tie rule).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from odise_pl.cli import main
from odise_pl.reference.fcclip_fixture import (
    DEFAULT_FCCLIP_FIXTURE,
    build_fcclip_fixture_model,
    fcclip_fixture,
    load_fcclip_weights,
)
from odise_pl.reference.fcclip_verify import compare_fcclip_input, verify_fcclip

FILES = ("fcclip_tiny_ref.pth", "fcclip_tiny_tensors.safetensors", "fcclip_tiny_tensors_index.json", "fcclip_tiny_train.safetensors")


@pytest.fixture(scope="module")
def fcclip_model():
    return build_fcclip_fixture_model(fcclip_fixture())[0]


def _failures(checks):
    return [f"{c.name}: {c.detail}" for c in checks if not c.ok]


def _copy(dest):
    dest.mkdir()
    for name in FILES:
        shutil.copy(DEFAULT_FCCLIP_FIXTURE / name, dest / name)
    return dest


def test_fcclip_fixture_matches_the_reference(fcclip_model):
    fx = fcclip_fixture()
    checks = verify_fcclip(fx, model=fcclip_model)
    assert len(checks) >= 200 and not _failures(checks), _failures(checks)
    names = {c.name for c in checks}
    recorded = [k for k in fx.load_tensors() if not k.endswith("/image")]
    grouped = {k.rsplit(".", 1)[0] if ".instances." in k else k for k in recorded}  # instances: one set check
    assert len(recorded) == 135 and grouped <= names, sorted(grouped - names)  # 137 with the 2 images: all checked
    train = [k for k in fx.load_train_record() if k.startswith("train/inA/losses.")]
    assert {f"{k} (training step, seeded)" for k in train} <= names and len(train) == 12
    exact = [c for c in checks if "(stored" in c.name]
    assert len(exact) == 7 and all(c.ok for c in exact)  # matching + losses on the reference's own inputs
    assert {f"train/criterion.aux{i}.indices (training step, seeded)" for i in range(3)} <= names


def test_a_perturbed_recorded_tensor_is_named(tmp_path, fcclip_model):
    from safetensors.torch import load_file, save_file

    folder = _copy(tmp_path / "fx")
    path = folder / "fcclip_tiny_tensors.safetensors"
    tensors = load_file(str(path))
    tensors["inB/oov.pooled_clip_feature"] = tensors["inB/oov.pooled_clip_feature"] * 1.001  # 1e-3 relative
    save_file(tensors, str(path))
    fx = fcclip_fixture(folder)
    index = fx.load_index()
    bad = _failures(compare_fcclip_input(fcclip_model, fx.load_tensors(), index["inputs"]["inB"], "inB"))
    assert len(bad) == 1 and bad[0].startswith("inB/oov.pooled_clip_feature: rel L2 1.0e-03"), bad


def test_a_perturbed_weight_is_named(fcclip_model):
    fx = fcclip_fixture()
    state = fx.load_state_dict()
    key = "sem_seg_head.predictor.class_embed.layers.2.weight"  # one weight of FC-CLIP's class head
    bad_state = dict(state)
    bad_state[key] = state[key].clone()
    bad_state[key][0, 0] += 0.5
    index, tensors = fx.load_index(), fx.load_tensors()
    try:
        load_fcclip_weights(fcclip_model, bad_state, source="perturbed")
        bad = _failures(compare_fcclip_input(fcclip_model, tensors, index["inputs"]["inA"], "inA"))
    finally:
        load_fcclip_weights(fcclip_model, state, source=str(fx.weights))
    assert "inA/predictor.class_embed" in {b.split(":")[0] for b in bad}, bad
    assert not any(b.startswith(("inA/predictor.pred_masks", "inA/backbone", "inA/pixel_decoder")) for b in bad)


def test_a_key_missing_from_the_fixture_weights_is_named(fcclip_model):
    from odise_pl.errors import ConfigError

    state = dict(fcclip_fixture().load_state_dict())
    del state["void_embedding.weight"]
    with pytest.raises(ConfigError, match="supervision.void_embedding.weight"):
        load_fcclip_weights(fcclip_model, state, source="x.pth")
    state = dict(fcclip_fixture().load_state_dict())
    state["backbone.clip_model.visual.extra"] = torch.zeros(1)
    with pytest.raises(ConfigError, match="backbone.clip_model.visual.extra"):
        load_fcclip_weights(fcclip_model, state, source="x.pth")


def test_verify_reference_names_a_folder_without_the_fixture(tmp_path, capsys):
    assert main(["verify-reference", "--kind", "fcclip", "--fixture", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odise-pl: error:") and "fcclip_tiny_ref.pth" in err and "Traceback" not in err


@pytest.mark.slow
def test_verify_reference_cli_fails_on_a_perturbed_weight(tmp_path, capsys):
    folder = _copy(tmp_path / "fx")
    path = folder / "fcclip_tiny_ref.pth"
    state = torch.load(path, weights_only=True)
    key = "sem_seg_head.predictor._mask_pooling_proj.1.weight"
    state[key] = state[key].clone()
    state[key][0, 0] += 0.5
    torch.save(state, path)
    assert main(["verify-reference", "--fixture", str(folder), "--kind", "fcclip"]) == 1
    out = capsys.readouterr().out
    assert "FAIL inA/predictor.maskpool_proj" in out and "FAIL inA/predictor.pred_masks" not in out
    assert "Traceback" not in out
