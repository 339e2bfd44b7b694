"""`odise-pl convert-reference --fcclip-ckpt` on FC-CLIP's released format at the REAL size (issue #23, item 4).

The checkpoint is generated here from the fixture's key list (303 keys, `key<TAB>shape<TAB>dtype`, the
released `fcclip_cocopan.pth` format: no `backbone.clip_model.*`), with random values; the model of
`experiments/fcclip_coco.yaml` is built on the meta device (no CLIP weights read).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from odise_pl.cli import main

REPO = Path(__file__).resolve().parents[2]
KEYS = REPO.parent / "shared" / "fcclip_fixture" / "fcclip_released_checkpoint_keys_real.txt"
EXPERIMENT = str(REPO / "experiments" / "fcclip_coco.yaml")
TRAINABLE = 20_721_601  # fcclip_keys_real.json: summary (= FCCLIP_REFERENCE.md 1.3)

pytestmark = pytest.mark.skipif(not KEYS.is_file(), reason="needs ../shared/fcclip_fixture")


def _released_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for line in KEYS.read_text().splitlines():
        if not line.strip():
            continue
        key, shape, _dtype = line.split("\t")
        state[key] = torch.randn(json.loads(shape), generator=gen)
    state["criterion.empty_weight"] = torch.ones(134)
    state["criterion.empty_weight"][-1] = 0.1
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    state = _released_state()
    path = tmp_path_factory.mktemp("fcclip") / "fcclip_cocopan.pth"
    torch.save({"model": state, "iteration": 368749}, path)
    return path, state


def _convert(pth, out, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["convert-reference", "--fcclip-ckpt", str(pth), "-c", EXPERIMENT, "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_real_size_checkpoint_converts_every_value_and_loads_with_no_key_left(released, tmp_path, capsys):
    from safetensors.torch import load_file

    from odise_pl.config import load_config
    from odise_pl.models.on_meta import build_on_meta
    from odise_pl.reference.fcclip_convert import rename

    pth, state = released
    code, out, err = _convert(pth, tmp_path / "run", capsys)
    assert code == 0, err
    assert out.count("backbone.clip_model.") == 1 and "no backbone.clip_model.* weights" in out  # said once
    weights = load_file(str(tmp_path / "run" / "weights.safetensors"))
    # every value kept: each file key feeds its target(s) unchanged (q/k/v: the thirds of in_proj)
    fed = {}
    for key, value in state.items():
        if key == "criterion.empty_weight":
            continue
        targets = rename(key, weights)
        assert targets, key
        for target, transform in targets:
            assert torch.equal(weights[target], transform(value)), key
            fed[target] = key
    assert set(fed) == set(weights)
    # loads into the real-size model: every trainable parameter filled, nothing left over
    model = build_on_meta(load_config(EXPERIMENT))
    result = model.load_state_dict(weights, strict=False, assign=True)
    assert result.unexpected_keys == []
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert not set(trainable) & set(result.missing_keys)
    assert all(not p.is_meta for p in trainable.values())
    assert sum(p.numel() for p in trainable.values()) == TRAINABLE
    assert {json.loads((tmp_path / "run" / "categories.json").read_text())["categories"][0]["synonyms"][6]} == {
        "children"
    }  # FC-CLIP's training names (its typo fix)


@pytest.fixture(scope="module")
def meta_model():
    from odise_pl.config import load_config
    from odise_pl.models.on_meta import build_on_meta

    return build_on_meta(load_config(EXPERIMENT))


def test_a_missing_key_is_refused_on_the_command_line_naming_it(released, tmp_path, capsys):
    _, state = released
    named = "sem_seg_head.predictor.transformer_self_attention_layers.4.self_attn.in_proj_weight"
    pth = tmp_path / "broken.pth"
    torch.save({"model": {k: v for k, v in state.items() if k != named}}, pth)
    code, _, err = _convert(pth, tmp_path / "run", capsys)
    assert code == 2 and err.startswith("odise-pl: error:") and "Traceback" not in err
    assert named in err and "broken.pth" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "change, named",
    [
        ("drop", "sem_seg_head.predictor.class_embed.layers.2.bias"),
        ("drop", "void_embedding.weight"),
        ("drop", "sem_seg_head.pixel_decoder.adapter_1.norm.weight"),
        ("reshape", "sem_seg_head.predictor._mask_pooling_proj.1.weight"),
        ("add", "sem_seg_head.predictor.class_embed.layers.3.weight"),
    ],
)
def test_a_missing_misshaped_or_unknown_key_is_named_as_spelt(released, meta_model, monkeypatch, change, named):
    import odise_pl.models.on_meta as on_meta
    from odise_pl.config import load_config
    from odise_pl.errors import ConfigError
    from odise_pl.reference.fcclip_convert import convert_fcclip_state_dict

    monkeypatch.setattr(on_meta, "build_on_meta", lambda cfg: meta_model)  # built once for these cases
    _, state = released
    state = dict(state)
    if change == "drop":
        del state[named]
    elif change == "reshape":
        state[named] = torch.zeros(3, 3)
    else:
        state[named] = torch.zeros(768, 256)
    with pytest.raises(ConfigError) as err:
        convert_fcclip_state_dict(state, load_config(EXPERIMENT), source="x.pth")
    assert named in str(err.value) and str(err.value).startswith("x.pth: ")


def test_a_file_with_the_clip_weights_is_accepted_and_says_so_once(released, meta_model, monkeypatch):
    import odise_pl.models.on_meta as on_meta
    from odise_pl.config import load_config
    from odise_pl.reference.fcclip_convert import convert_fcclip_state_dict

    monkeypatch.setattr(on_meta, "build_on_meta", lambda cfg: meta_model)
    _, state = released
    state = {
        **state,
        "backbone.clip_model.logit_scale": torch.tensor(4.6),
        "backbone.clip_model.visual.trunk.stem.0.weight": torch.zeros(192, 3, 4, 4),
    }
    weights, note = convert_fcclip_state_dict(state, load_config(EXPERIMENT), source="full.pth")
    assert "holds 2 backbone.clip_model.* keys (left out)" in note and note.count("backbone.clip_model.") == 1
    assert not any("clip" in k and k.startswith("backbone") for k in weights)
