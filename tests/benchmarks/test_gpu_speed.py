"""Smoke test of benchmarks/gpu_speed.py (the prepared GPU profile + before/after run) at tiny shapes on the CPU.

The tiny random model of ``bench_model.py --tiny``, 64x64 crops, one iteration; ``compile_decoder`` left out
of the "after" switches (inductor's first compilation takes minutes on 2 cores; it has its own test).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_speed_small_writes_the_report(tmp_path):
    script = _load()
    out = tmp_path / "gpu_speed.json"
    script.main(
        [
            "--device",
            "cpu",
            "--small",
            "--num-classes",
            "5",
            "--after",
            "fused_optimizer",
            "batched_matching",
            "no_host_syncs",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    for key in ("env", "params", "profile", "before", "after", "speedup", "after_switches", "precision"):
        assert key in report, key
    parts = report["profile"]["parts"]
    for name in (
        "frozen_forward",
        "pixel_decoder_forward",
        "transformer_decoder_forward",
        "hungarian_matching",
        "point_sampled_losses",
        "backward",
        "generator_backward",
        "captioner_backward_through_unet",
        "optimizer",
        "step_total",
    ):
        assert parts[name]["ms"] > 0 and parts[name]["calls"] >= 1, (name, parts)
    assert parts["step_total"]["ms"] >= parts["backward"]["ms"] >= parts["captioner_backward_through_unet"]["ms"]
    syncs = report["profile"]["host_syncs"]
    assert syncs["forward_and_loss"]["cpu"] >= 3 * 2  # today: a cost-matrix copy per supervised layer and image
    assert syncs["step_total"] >= syncs["forward_and_loss_total"]
    assert report["profile"]["top_ops"]
    for variant in ("before", "after"):
        train, infer = report[variant]["train"], report[variant]["infer"]
        assert train["images_per_s"] > 0 and train["batch"] == 2
        assert infer["images_per_s"] > 0 and infer["gflops_per_image"] > 0 and infer["pct_of_989_peak"] > 0
        assert "peak_gib_batch1" in infer and "peak_gib" in train
    assert report["after_switches"] == ["fused_optimizer", "batched_matching", "no_host_syncs"]
    assert report["speedup"]["train"] > 0
