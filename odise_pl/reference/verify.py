"""Compare an odise-pl fixture model with the tensors the official ODISE code recorded.

Tolerances (one number each, and why):

* **float tensors: relative L2 error <= 1e-4** (:mod:`~odise_pl.reference.checks` says why).
* **the mask embedding's hard threshold**: a mask logit within the measured error of 0 can land
  on the other side of ``sigmoid > 0.5`` inside the pooling (seen: -2.3e-5 vs +1.7e-7). Where the
  layer's mask embedding is then off, it is compared again with the pooling fed the reference's
  own mask logits, which isolates our mask-embedding function from the flip; every flipped pixel
  must lie within the measured max |ours - reference| of that layer's mask logits of 0 (the tie
  rule of :mod:`~odise_pl.reference.discrete`).
* **discrete outputs (semantic argmax, panoptic maps and segments, instances)**: the tie rule of
  :mod:`~odise_pl.reference.discrete`, applied by :mod:`~odise_pl.reference.postprocess_checks`,
  to our outputs and to our post-processing run on the reference's own ``final.mask_cls`` /
  ``final.mask_pred``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from odise_pl.errors import OdiseError
from odise_pl.reference.capture import capture, pad_to
from odise_pl.reference.checks import REL_TOL, Check, max_abs, rel_l2
from odise_pl.reference.fixture import Fixture, build_fixture_model
from odise_pl.reference.postprocess_checks import discrete_checks
from odise_pl.reference.train_record import check_training_record

#: recorded tensors with no counterpart in odise-pl (and why)
NOT_COMPARED = {
    "predictor.pseudo_pred_logits": "the label model's PseudoClassEmbed placeholder (ones/zero), replaced "
    "by the category head before use; odise-pl has no such module",
}
#: recorded name -> how ours is compared (log-space tensors: compare log-softmax, invariant to the reference's
#: unnormalised form)
LOG_SOFTMAX = ("clip_head.pred_open_logits", "final.mask_cls")
UNIT_NORM = ("clip_head.clip_text_embed_raw",)  # our CLIP-branch text bank stores unit vectors: compare directions


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0]  # "predictor.aux1.mask_embed" -> "predictor.aux1"


def compare_input(model, tensors: dict, info: dict, prefix: str) -> list[Check]:
    """All checks for one fixture input (``prefix`` = ``inA`` / ``inB``)."""
    image = tensors[f"{prefix}/image"]
    got = capture(model, image, info["height"], info["width"])
    checks: list[Check] = []
    names = sorted(k[len(prefix) + 1 :] for k in tensors if k.startswith(prefix + "/") and k != f"{prefix}/image")
    for name in names:
        ref = tensors[f"{prefix}/{name}"]
        full = f"{prefix}/{name}"
        if name in NOT_COMPARED:
            checks.append(Check(full, True, f"not compared: {NOT_COMPARED[name]}"))
            continue
        if name.startswith("final.instances") or name.startswith("final.panoptic_seg") or name.endswith("argmax"):
            continue  # discrete: below
        key = f"{name}.log_softmax" if name in LOG_SOFTMAX else name
        if key not in got:
            checks.append(Check(full, False, "odise-pl produced no such tensor"))
            continue
        ours, want = got[key], ref.float()
        if name in LOG_SOFTMAX:
            want = want.log_softmax(-1)
        if name in UNIT_NORM:
            ours, want = F.normalize(ours.float(), dim=-1), F.normalize(want, dim=-1)
        if ours.numel() != want.numel():
            checks.append(Check(full, False, f"shape {tuple(ours.shape)} vs {tuple(want.shape)}"))
            continue
        err = rel_l2(ours, want)
        if err <= REL_TOL:
            checks.append(Check(full, True, f"rel L2 {err:.1e}"))
            continue
        checks.append(
            _retry_after_flip(model, got, tensors, prefix, name, err)
            if name.endswith(("mask_embed", "mask_pooled_features")) and name.startswith("predictor")
            else Check(full, False, f"rel L2 {err:.1e} > {REL_TOL:g}")
        )
    checks += discrete_checks(model, got, tensors, info, prefix)
    return checks


def _retry_after_flip(model, got, tensors, prefix, name, err) -> Check:
    """A mask-embedding error from a mask logit on the other side of 0: re-pool with the reference's logits."""
    full = f"{prefix}/{name}"
    layer = "predictor" if name.startswith("predictor.mask_pooled") else _layer(name)
    ref_masks = tensors.get(f"{prefix}/{layer}.pred_masks")
    if ref_masks is None:
        return Check(full, False, f"rel L2 {err:.1e} > {REL_TOL:g}")
    ours_masks = got[f"{layer}.pred_masks"]
    flips = (ref_masks > 0) != (ours_masks > 0)
    worst = float(ours_masks[flips].abs().max()) if flips.any() else 0.0
    bound = max_abs(ours_masks, ref_masks)  # the measured error of the decision's input
    if not flips.any() or worst > bound:
        return Check(
            full,
            False,
            f"rel L2 {err:.1e} > {REL_TOL:g} ({int(flips.sum())} mask flips, |logit| up to {worst:.1e}, measured logit error {bound:.1e})",
        )
    head = model.mask_generator.mask_embed
    q, feats = got[f"{layer}.decoder_output"], got["pixel_decoder.mask_features"]
    fn = head.pooled if name.endswith("mask_pooled_features") else head
    again = rel_l2(fn(q, ref_masks, feats), tensors[f"{prefix}/{name}"])
    return Check(
        full,
        again <= REL_TOL,
        f"rel L2 {err:.1e} from {int(flips.sum())} mask pixel(s) at |logit| <= "
        f"{worst:.1e} (within the measured logit error {bound:.1e}) on the other side of 0; with the reference's mask logits "
        f"{again:.1e}",
    )


@contextmanager
def strict_fp32(device: str) -> Iterator[None]:
    """float32 arithmetic as the reference's: on CUDA, TF32 off for matmuls and convolutions (restored after).

    Raises:
        OdiseError: ``device`` is ``cuda`` and no CUDA device is available.
    """
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise OdiseError(f"--device {device}: give cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OdiseError(
            f"--device {device}: no CUDA device is available to this process "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run with --device cpu"
        )
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        torch.set_float32_matmul_precision(precision)


@torch.no_grad()
def verify_fixture(fx: Fixture, model=None, device: str = "cpu") -> list[Check]:
    """Every check of one fixture model (built with :func:`build_fixture_model` on ``device`` unless given),
    in float32 with TF32 off."""
    with strict_fp32(device):
        if model is None:
            model, _ = build_fixture_model(fx, device=device)
        tensors = {k: v.to(device) for k, v in fx.load_tensors().items()}
        index = fx.load_index()
        checks: list[Check] = []
        for prefix in ("inA", "inB"):
            checks += compare_input(model, tensors, index["inputs"][prefix], prefix)
        if fx.train_record.is_file() and "train" in index:  # the caption fixture's training forward
            from safetensors.torch import load_file

            with torch.enable_grad():
                checks += check_training_record(model, load_file(str(fx.train_record), device=device), index["train"])
    return checks


__all__ = ["Check", "REL_TOL", "compare_input", "pad_to", "rel_l2", "strict_fp32", "verify_fixture"]
