"""Every speed option leaves the outputs within a stated tolerance of the plain float32 path.

The model is the tiny random label model of ``benchmarks/bench_model.py --tiny`` (tiny SD
VAE/UNet/text encoder, tiny CLIP ViT, implicit captioner with its gates opened so that the
CLIP image tower matters, Mask2Former, 5 classes), on the CPU, batch 2 at 128x128 (at 64x64
the tiny UNet's innermost level is 1x1, where GroupNorm over two values turns bf16 rounding
into sign flips). Compared: the backbone features ``s2..s5`` and the mask logits as relative
L2 error ``|a - b| / |a|``, the class probabilities as the largest absolute difference.
The tolerances are the ones stated in :mod:`odise_pl.models.speed`; every option is also
checked to have acted, and to give back bit-identical float32 outputs once removed.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from odise_pl.models.speed import SpeedOptions, apply_speed_options, attention_processor_names

pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_model.py"
SIZE, BATCH = 128, 2

# (features, mask logits, probabilities): see the docstring of odise_pl/models/speed.py
EXACT = (0.0, 0.0, 0.0)
# probabilities: the reference's mask embedding (LayerNorm + MLP after adding the pooled features to the
# query) carries feature error into the class logits more than the earlier embedding did (measured below)
REORDERED = (1e-4, 1e-4, 3e-5)  # float32, other summation order (channels-last, SDPA, batching; probs 1.1e-5-1.3e-5)
COMPILED = (1e-4, 1e-4, 3e-5)  # float32, inductor fusions (probs 1.1e-5)
BF16 = (0.10, 0.15, 0.15)  # bf16 frozen parts (8 mantissa bits; masks measured 0.11-0.12, probs 0.10-0.104)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_model", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def model(bench):
    args = bench.parse_args(["--tiny", "--device", "cpu", "--num-classes", "5"])
    torch.manual_seed(0)  # the same random weights whichever tests ran before (the errors depend on them)
    module = bench.build_module(args, torch.device("cpu")).eval()
    with torch.no_grad():  # open the captioner's gates: the CLIP image tower then shapes the conditioning
        module.backbone.captioner.alpha_cond.fill_(0.5)
        module.backbone.captioner.alpha_cond_time_embed.fill_(0.5)
    return module


@pytest.fixture(scope="module")
def images(bench):
    torch.manual_seed(1)
    return bench.random_images(BATCH, SIZE, torch.device("cpu"))


def run(module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Backbone features, last-layer mask logits (B, Q, h, w) and class probabilities (B, Q, K+1)."""
    with torch.no_grad():
        feats = module.backbone(images.float())
        out = module.mask_generator(feats)
        probs, masks = module.predict_probs(images, out)
    return {**{k: v.float() for k, v in feats.items()}, "masks": masks.float(), "probs": probs.float()}


@pytest.fixture(scope="module")
def reference(model, images):
    return run(model, images)


def errors(ref: dict, got: dict) -> dict[str, float]:
    err = {k: float((got[k] - ref[k]).norm() / ref[k].norm()) for k in ref if k != "probs"}
    err["probs"] = float((got["probs"] - ref["probs"]).abs().max())
    return err


def assert_within(ref: dict, got: dict, tol: tuple[float, float, float]) -> dict[str, float]:
    feat_tol, mask_tol, prob_tol = tol
    err = errors(ref, got)
    for key, value in err.items():
        bound = {"masks": mask_tol, "probs": prob_tol}.get(key, feat_tol)
        assert value <= bound, f"{key}: error {value:.3g} above the stated tolerance {bound:g} ({err})"
    return err


def assert_identical(ref: dict, got: dict) -> None:
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"{key} is not bit-identical to the plain float32 path"


def _unet_dtype(model) -> torch.dtype:
    return next(model.backbone.unet.parameters()).dtype


# option, tolerance, what shows that the option acted
CASES = {
    "frozen_autocast": (SpeedOptions(frozen_autocast=True), BF16, lambda m, h, err: max(err.values()) > 0),
    "frozen_weights": (
        SpeedOptions(frozen_autocast=True, frozen_weights=True),
        BF16,
        lambda m, h, err: _unet_dtype(m) == torch.bfloat16 and next(m.backbone.clip.model.parameters()).dtype == torch.bfloat16,
    ),
    "channels_last": (
        SpeedOptions(channels_last=True),
        REORDERED,
        lambda m, h, err: m.backbone.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last),
    ),
    "classic_attention": (
        SpeedOptions(attention="classic"),
        REORDERED,
        lambda m, h, err: h.report["attention_processors"] == ["AttnProcessor"],
    ),
    "tf32": (
        SpeedOptions(tf32=True),
        EXACT,  # CUDA flag: no effect on the CPU
        lambda m, h, err: torch.backends.cuda.matmul.allow_tf32,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_option_within_tolerance_and_removed_exactly(name, model, images, reference):
    opts, tol, acted = CASES[name]
    before = attention_processor_names(model.backbone.unet)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    handle = apply_speed_options(model, opts)
    try:
        got = run(model, images)
        err = assert_within(reference, got, tol)
        print(f"{name}: {err}")
        assert acted(model, handle, err), f"{name} did not take effect ({handle.report})"
    finally:
        handle.remove()
    assert_identical(reference, run(model, images))
    assert _unet_dtype(model) == torch.float32
    assert attention_processor_names(model.backbone.unet) == before == ["AttnProcessor2_0"]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    assert model.backbone.unet.conv_in.weight.is_contiguous()


def test_frozen_weights_restore_the_exact_float32_values(model):
    """bf16 -> float32 would drop the low mantissa bits; remove() restores the originals."""
    before = {k: v.clone() for k, v in model.backbone.unet.state_dict().items()}
    handle = apply_speed_options(model, SpeedOptions(frozen_weights=True))
    assert model.backbone.vae.encoder.conv_in.weight.dtype == torch.bfloat16
    handle.remove()
    after = model.backbone.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)


def test_options_combined_within_bf16_tolerance(model, images, reference):
    handle = apply_speed_options(
        model, SpeedOptions(frozen_autocast=True, frozen_weights=True, channels_last=True, attention="classic", tf32=True)
    )
    try:
        assert_within(reference, run(model, images), BF16)
    finally:
        handle.remove()
    assert_identical(reference, run(model, images))


@pytest.mark.slow
def test_compiled_unet_blocks_within_tolerance(model, images, reference):
    """Regional torch.compile (inductor, C++ on the CPU): the first call compiles (~60 s on 2 cores)."""
    handle = apply_speed_options(model, SpeedOptions(compile_unet=True))
    try:
        assert handle.report["compiled_blocks"] > 0
        start = time.perf_counter()
        got = run(model, images)
        compile_s = time.perf_counter() - start
        assert_within(reference, got, COMPILED)
        print(f"first compiled call: {compile_s:.1f} s, errors {errors(reference, got)}")
    finally:
        handle.remove()
    assert_identical(reference, run(model, images))


# ------------------------------------------------------------------ inference paths beside speed.py
def test_batched_equals_per_image(model, images, reference):
    """One batch of 2 vs two batches of 1: same outputs up to kernel blocking (REORDERED)."""
    singles = [run(model, images[i : i + 1]) for i in range(BATCH)]
    stacked = {k: torch.cat([s[k] for s in singles]) for k in reference}
    assert_within(reference, stacked, REORDERED)


def test_no_grad_inference_equals_the_captioner_gradient_path(model, images, reference):
    """Evaluation under no_grad / inference_mode computes what the training-time graph computes."""
    with torch.enable_grad():
        feats = model.backbone(images.float())
        assert feats["s5"].requires_grad  # the captioner's gradient path through the UNet
        out = model.mask_generator(feats)
    probs, masks = model.predict_probs(images, out)
    with_grad = {**{k: v.detach() for k, v in feats.items()}, "masks": masks, "probs": probs}
    assert_identical(reference, with_grad)
    with torch.inference_mode():
        assert_identical(reference, run(model, images))


def test_cached_text_embeddings_equal_fresh_ones(model, images, reference, tmp_path, monkeypatch):
    from odise_pl.models.open_vocab.text_bank import TextEmbeddingBank

    bank = TextEmbeddingBank(model.backbone.clip, cache_dir=tmp_path)
    names = [["cat"], ["dog", "puppy"], ["sky"], ["road"], ["tree"]]
    fresh = bank(names)
    assert bank.cache_path(names).is_file()
    monkeypatch.setattr(bank, "_encode", lambda _names: pytest.fail("the cache was not used"))
    cached = bank(names)
    assert torch.equal(fresh.embeds, cached.embeds) and torch.equal(fresh.class_index, cached.class_index)

    original, is_thing = model.eval_text, model.eval_is_thing.clone()
    try:
        model.set_eval_vocabulary(fresh, is_thing)
        probs_fresh = run(model, images)["probs"]
        model.set_eval_vocabulary(cached, is_thing)
        assert torch.equal(probs_fresh, run(model, images)["probs"])
    finally:
        model.set_eval_vocabulary(original, is_thing)
    assert_identical(reference, run(model, images))
