"""Shared fixtures: a small generated dataset and the path of the real COCO sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from odise_pl.data_modules.synthetic_shapes import generate_synthetic_coco

REPO_ROOT = Path(__file__).resolve().parents[2]
COCO_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "coco_panoptic_sample"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """40 train + 8 val images of 64x64 (read-only by convention: copy before corrupting)."""
    return generate_synthetic_coco(tmp_path_factory.mktemp("synth") / "shapes", 40, 8, seed=3, image_size=64)


@pytest.fixture()
def coco_sample() -> Path:
    if not (COCO_SAMPLE / "panoptic_examples.json").is_file():
        pytest.skip(f"the real COCO panoptic sample is absent (expected at {COCO_SAMPLE})")
    return COCO_SAMPLE


@pytest.fixture()
def make_module():
    """Factory: a CocoPanopticDataModule on a generated folder, small and single-process."""
    return _make_module


def _make_module(root: Path, **overrides):
    from odise_pl.data_modules.coco_panoptic import CocoPanopticDataModule

    kwargs = dict(
        root=str(root),
        batch_size=4,
        eval_batch_size=3,
        num_workers=0,
        crop_size=64,
        min_scale=0.5,
        max_scale=1.5,
        eval_short_side=64,
        eval_max_long_side=128,
        train_captions_json="annotations/captions_train2017.json",
        val_captions_json="annotations/captions_val2017.json",
        pin_memory=False,
    )
    kwargs.update(overrides)
    return CocoPanopticDataModule(**kwargs)
