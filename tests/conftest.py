"""Shared fixtures: tiny models and the real COCO sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from odise_pl import install_torchvision_compat

install_torchvision_compat()  # torchvision's ops may not load here (odise_pl.torchvision_hook)

os.environ.setdefault("ODISE_PL_CACHE", str(Path(__file__).resolve().parent / ".." / ".pytest_cache" / "odise_pl"))
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "coco_panoptic_sample"


@pytest.fixture
def coco_sample() -> Path:
    if not (SAMPLE / "panoptic_examples.json").is_file():
        pytest.skip(f"real COCO sample not found at {SAMPLE} (it lives in ../shared beside the project root)")
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_clip():
    from odise_pl.models.clip_model import ClipSpec, load_clip

    return load_clip(ClipSpec("odise-tiny-convnext", None))


@pytest.fixture(scope="session")
def tiny_vit_clip():
    from odise_pl.models.clip_model import ClipSpec, load_clip

    return load_clip(ClipSpec("odise-tiny-vit", None))
