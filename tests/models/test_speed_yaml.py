"""``model.speed`` in an experiment file: the speed switches for a whole run, from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from odise_pl.config import load_config
from odise_pl.data_modules.synthetic_shapes import categories_json
from odise_pl.errors import ConfigError
from odise_pl.models.builder import build_model
from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "experiments" / "quickstart_diffusion.yaml"
SMALL = ["model.mask_generator.dec_layers=1", "model.mask_generator.train_num_points=256", "model.inference.classifier=ensemble"]


def _build(*overrides: str):
    from odise_pl.models import clip_model

    clip_model._CACHE.clear()  # a CLIP of its own (the cache shares one per process; speed casts it in place)
    torch.manual_seed(0)  # ... and the same random weights for every build
    return build_model(load_config(QUICK, [*SMALL, *overrides]), categories_json())


def test_bf16_frozen_parts_from_yaml_match_float32_within_tolerance():
    plain = _build().eval()
    fast = _build("model.speed.frozen_autocast=true", "model.speed.frozen_weights=true", "model.speed.channels_last=true").eval()
    backbone = fast.backbone
    assert {p.dtype for p in backbone.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in backbone.clip.model.parameters()} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in fast.parameters() if p.requires_grad)  # trained parts stay fp32
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        ref, out = plain(images), fast(images)
        err = (out["pred_masks"][-1] - ref["pred_masks"][-1]).norm() / ref["pred_masks"][-1].norm()
        assert err < 0.10  # the bf16 tolerance of odise_pl.models.speed
        probs, _ = fast.predict_probs(images, out)  # CLIP mask classifier + ensemble, in bf16
        ref_probs, _ = plain.predict_probs(images, ref)
        assert probs.dtype == torch.float32 and (probs - ref_probs).abs().max() < 0.10  # (measured 0.061)
        fast.set_vocabulary([["zebra"], ["ocean"]], [True, False])  # a new vocabulary: CLIP text in bf16
        probs, _ = fast.predict_probs(images, out)
        assert probs.shape[-1] == 3 and torch.isfinite(probs).all()


def test_fit_with_speed_switches_and_resume_without_them(tmp_path):
    from odise_pl.cli import main

    base = [*micro_run(tmp_path, steps=2, num_train=4), "run.version=v", "checkpoint.every_n_steps=1", *SMALL]
    fast = ["model.speed.frozen_autocast=true", "model.speed.frozen_weights=true"]
    assert main(["fit", "-c", str(QUICK), *base, *fast, "trainer.max_steps=2"]) == 0
    run = tmp_path / "runs" / "quickstart_diffusion" / "v"
    assert (run / "metrics.json").is_file()
    assert main(["fit", "-c", str(QUICK), *base, "trainer.max_steps=3"]) == 0  # resumed in float32
    assert (run / "metrics.1.json").is_file()


def test_bad_speed_settings_name_the_key():
    # checked when the config is loaded, before anything is built
    with pytest.raises(ConfigError, match="model.speed.frozen_weights.*frozen_autocast: true"):
        load_config(QUICK, [*SMALL, "model.speed.frozen_weights=true"])
    with pytest.raises(ConfigError, match="'model.speed.attention' must be one of sdpa, classic, got 'flash'"):
        load_config(QUICK, [*SMALL, "model.speed.attention=flash"])
    with pytest.raises(ConfigError, match="speed"):
        load_config(QUICK, ["model.speed.bf16=true"])


def test_training_switches_are_constructor_arguments_of_the_built_parts():
    model = _build("model.speed.batched_matching=true", "model.speed.no_host_syncs=true", "model.speed.fused_optimizer=true")
    assert model.criterion.batched_matching and model.criterion.no_host_syncs and model.fused_optimizer
    assert "encoder_layers_without_sync" in model.speed_handle.report  # transformers' encoder layers: patched
    model.speed_handle.remove()  # undoes the patches only: the switches were the constructors' arguments
    assert model.criterion.batched_matching and model.criterion.no_host_syncs and model.fused_optimizer
    assert all("forward" not in vars(m) for m in model.mask_generator.modules())
