"""FC-CLIP's recipe (experiments/fcclip_coco.yaml): its parameter counts and its training values (issue #23).

The counts are checked against the fixture's real model (``fcclip_keys_real.json``, built by the official
code), on the meta device: no weight is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odise_pl.config import load_config

REPO = Path(__file__).resolve().parents[1]
REAL_KEYS = REPO.parent / "shared" / "fcclip_fixture" / "fcclip_keys_real.json"
EXPERIMENT = REPO / "experiments" / "fcclip_coco.yaml"


@pytest.mark.skipif(not REAL_KEYS.is_file(), reason="needs ../shared/fcclip_fixture")
def test_summary_gives_the_official_models_trainable_and_frozen_counts():
    from odise_pl.commands.summary import summarize

    summary = json.loads(REAL_KEYS.read_text())["summary"]
    rows, text = summarize(load_config(EXPERIMENT))
    trainable = sum(r.trainable for r in rows)
    frozen = sum(r.frozen for r in rows)
    assert (trainable, frozen) == (summary["trainable_params"], summary["frozen_params"]) == (20_721_601, 351_772_609)
    assert "20,721,601" in text and "351,772,609" in text


def test_recipe_values():
    from odise_pl.models.optim import lr_factor

    cfg = load_config(EXPERIMENT)
    assert (cfg.data.global_batch_size, cfg.trainer.max_steps, cfg.optim.lr, cfg.optim.clip_grad_norm) == (16, 368_750, 1e-4, 0.01)
    assert (cfg.trainer.precision, cfg.model.mask_generator.num_queries, cfg.optim.warmup_steps) == ("16-mixed", 250, 0)
    assert (cfg.model.clip.model_name, cfg.model.clip.pretrained) == ("convnext_large_d_320", "laion2b_s29b_b131k_ft_soup")
    assert cfg.optim.no_decay == "norm_and_embedding"
    steps = cfg.trainer.max_steps
    changes = [s for s in (327_777, 327_778, 355_091, 355_092) if lr_factor(s, cfg.optim, steps) != lr_factor(s - 1, cfg.optim, steps)]
    assert changes == [327_778, 355_092] and lr_factor(0, cfg.optim, steps) == 1.0
    inference = cfg.model.inference
    assert (inference.alpha, inference.beta, inference.classifier, inference.instance_on) == (0.4, 0.8, "ensemble", True)
    assert (inference.miou_average, cfg.data.eval_short_side, cfg.data.eval_max_long_side) == ("gt_present", 800, 1333)
