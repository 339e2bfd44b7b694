"""The whole model at real shapes (meta device): the paper's 28.1M trainable / 1,493.8M frozen, and exactly the
reference's counts (tests/data/reference_fixture: the official code's real model, CLIP counted once)."""

from pathlib import Path

from odise_pl.commands.summary import summarize
from odise_pl.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_label_model_parameter_budget_matches_the_paper():
    cfg = load_config(REPO / "experiments" / "odise_label_coco.yaml")
    rows, text = summarize(cfg)
    trainable = sum(r.trainable for r in rows)
    frozen = sum(r.frozen for r in rows)
    assert abs(trainable - 28.1e6) <= 0.3e6, text
    assert abs(frozen - 1_493.8e6) / 1_493.8e6 < 0.005, text
    parts = {r.part for r in rows}
    assert {"backbone.unet", "backbone.clip", "mask_generator", "supervision"} <= parts
    assert (trainable, frozen) == (28_067_009, 1_494_179_500), text  # odise_label_keys_real.json's summary


def test_caption_model_parameter_counts_are_the_references():
    rows, text = summarize(load_config(REPO / "experiments" / "odise_caption_coco.yaml"))
    assert (sum(r.trainable for r in rows), sum(r.frozen for r in rows)) == (28_066_755, 1_494_179_500), text
