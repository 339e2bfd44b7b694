"""Compare the odise-pl FC-CLIP with the tensors the official fc-clip code recorded (``--kind fcclip``).

Tolerances are the ODISE checks' (:mod:`~odise_pl.reference.verify`):

* **float tensors: relative L2 <= 1e-4** (:mod:`~odise_pl.reference.checks`). ``final.mask_cls`` (the
  reference's ``log(p + 1e-8)``) is compared after a log-softmax: odise-pl hands the post-processing
  ``softmax`` of it, which is what the reference's post-processing computes first.
* **hard thresholds inside the model**: the class head's mask pooling (``logits > 0``), the
  out-of-vocabulary pooling (stride-32 masks ``> 0``) and the decoder's attention masks
  (``sigmoid < 0.5``) may flip an element only where the decision's input is within its measured
  max |ours - reference| of the threshold (the tie rule of :mod:`~odise_pl.reference.discrete`). A
  pooled tensor off after such a flip is computed again from the reference's own mask logits, which
  isolates our function from the flip.
* **discrete outputs** (semantic argmax, panoptic maps and segments, instances):
  :func:`~odise_pl.reference.postprocess_checks.discrete_checks`.
* **text**: the reference's test vocabulary lists the synonym "kitchen range" twice in class "stove"
  (403 rows); odise-pl's names are de-duplicated (402). Each reference row is compared with our row of
  the same class and name (the maximum over synonyms is unchanged by a duplicate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odise_pl.models.builder import class_names
from odise_pl.reference.checks import REL_TOL, Check, max_abs, rel_l2
from odise_pl.reference.discrete import threshold_check
from odise_pl.reference.fcclip_capture import capture_fcclip, head_tensors, oov_tensors, text_tensors
from odise_pl.reference.fcclip_fixture import FcclipFixture, build_fcclip_fixture_model, fixture_categories
from odise_pl.reference.postprocess_checks import discrete_checks
from odise_pl.reference.verify import strict_fp32

#: compared as log-softmax (the reference's unnormalised log-probabilities)
LOG_SOFTMAX = ("final.mask_cls",)
#: checked by discrete_checks (the tie rule), not as floats
DISCRETE = ("final.instances", "final.panoptic_seg", "final.sem_seg_argmax")
HEAD = ("maskpool_raw", "maskpool_proj", "class_embed", "pred_logits")


def _float_check(full: str, ours: torch.Tensor, want: torch.Tensor) -> Check:
    if ours.numel() != want.numel():
        return Check(full, False, f"shape {tuple(ours.shape)} vs {tuple(want.shape)}")
    err = rel_l2(ours, want)
    return Check(full, err <= REL_TOL, f"rel L2 {err:.1e}" + ("" if err <= REL_TOL else f" > {REL_TOL:g}"))


def _retry(model, got: dict, tensors: dict, prefix: str, name: str, err: float) -> Check:
    """Recompute ``name`` from the reference's mask logits where a flip explains the error."""
    full = f"{prefix}/{name}"
    layer, _, what = name.rpartition(".")
    if layer.startswith("predictor") and what in HEAD:
        ours_m, ref_m = got[f"{layer}.pred_masks"], tensors[f"{prefix}/{layer}.pred_masks"]
        redo = head_tensors(model, ref_m, got[f"{layer}.decoder_output"], got["pixel_decoder.mask_features"], model.eval_text)[what]
    elif name.startswith(("oov.", "ens.")):
        ours_m, ref_m = got["oov.mask_for_pooling"], tensors[f"{prefix}/oov.mask_for_pooling"]
        ref_final = tensors[f"{prefix}/predictor.pred_masks"]
        redo = oov_tensors(model, got["backbone.clip_vis_dense"], ref_final, got["predictor.pred_logits"])[name]
    else:
        return Check(full, False, f"rel L2 {err:.1e} > {REL_TOL:g}")
    flips = (ours_m > 0) != (ref_m > 0)
    bound = max_abs(ours_m, ref_m)
    worst = float(ours_m[flips].abs().max()) if flips.any() else 0.0
    if not flips.any() or worst > bound:
        return Check(
            full,
            False,
            f"rel L2 {err:.1e} > {REL_TOL:g} ({int(flips.sum())} mask flips, |logit| up to {worst:.1e}, measured mask error {bound:.1e})",
        )
    again = rel_l2(redo, tensors[full])
    return Check(
        full,
        again <= REL_TOL,
        f"rel L2 {err:.1e} from {int(flips.sum())} mask element(s) at |logit| <= "
        f"{worst:.1e} (within the measured error {bound:.1e}) on the other side of "
        f"0; from the reference's mask logits {again:.1e}",
    )


def _attention(got: dict, tensors: dict, prefix: str, name: str) -> Check:
    """An attention mask (True = not attended: ``sigmoid(resized mask logit) < 0.5``) by the tie rule."""
    layer = name.rsplit(".", 1)[0]
    full = f"{prefix}/{name}"
    ref, ours = tensors[full].bool(), got[name].bool()
    if ours.shape != ref.shape:
        return Check(full, False, f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}")
    if torch.equal(ours, ref):
        return Check(full, True, "exact")
    heads = ref.shape[0] // got[f"{layer}.pred_masks"].shape[0]
    level = next(
        k for k in got if k.startswith("pixel_decoder.multi_scale_features.") and got[k].shape[-2] * got[k].shape[-1] == ref.shape[-1]
    )
    size = got[level].shape[-2:]

    def probs(masks: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False).sigmoid()
        return up.flatten(2).repeat_interleave(heads, dim=0).reshape(ref.shape)

    mine = probs(got[f"{layer}.pred_masks"])
    err = max_abs(mine, probs(tensors[f"{prefix}/{layer}.pred_masks"]))
    if not torch.equal(mine < 0.5, ours):
        return Check(full, False, "the decoder's attention mask is not sigmoid(resized mask logits) < 0.5")
    return threshold_check(full, -mine, ref, -0.5, err)


def compare_fcclip_input(model, tensors: dict, info: dict, prefix: str) -> list[Check]:
    """All checks of one fixture input (``inA`` / ``inB``)."""
    got = capture_fcclip(model, tensors[f"{prefix}/image"], info["height"], info["width"])
    checks: list[Check] = []
    names = sorted(k[len(prefix) + 1 :] for k in tensors if k.startswith(prefix + "/") and k != f"{prefix}/image")
    for name in names:
        full = f"{prefix}/{name}"
        if name.startswith(DISCRETE):
            continue
        if name.endswith("attn_mask"):
            checks.append(_attention(got, tensors, prefix, name))
            continue
        key = f"{name}.log_softmax" if name in LOG_SOFTMAX else name
        if key not in got:
            checks.append(Check(full, False, "odise-pl produced no such tensor"))
            continue
        want = tensors[full].float()
        check = _float_check(full, got[key], want.log_softmax(-1) if name in LOG_SOFTMAX else want)
        if not check.ok and check.detail.startswith("rel L2"):
            check = _retry(model, got, tensors, prefix, name, rel_l2(got[key], want))
        checks.append(check)
    return checks + discrete_checks(model, got, tensors, info, prefix)


def _synonym_rows(vocabulary: dict) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(class, name) of every reference text row, and of every odise-pl row."""
    ref = [(k, n) for k, c in enumerate(vocabulary["test_classes"]) for n in c.replace(", ", ",").split(",")]
    _, test = fixture_categories()
    ours = [(k, n) for k, c in enumerate(test) for n in class_names(c)]
    return ref, ours


def text_checks(model, tensors: dict, index: dict) -> list[Check]:
    """The test text classifier (prompts, raw embeddings, rows, void row), the seen mask, the logit scale."""
    ref_rows, our_rows = _synonym_rows(index["vocabulary"])
    templates = list(model.text_bank.templates)
    prompts = [t.format(n) for _, n in our_rows for t in templates]
    got = text_tensors(model, prompts)
    where = {row: i for i, row in enumerate(our_rows)}
    checks = []
    absent = [row for row in ref_rows if row not in where]
    dup = len(ref_rows) - len(set(ref_rows))
    same_names = not absent and set(ref_rows) == set(our_rows)
    checks.append(
        Check(
            "text.names",
            same_names,
            f"{len(ref_rows)} reference rows ({dup} duplicated synonym(s)) "
            f"-> {len(our_rows)} odise-pl rows" + ("" if same_names else f"; missing {absent[:5]}"),
        )
    )
    if not same_names:
        return checks
    rows = torch.tensor([where[r] for r in ref_rows])
    t = len(templates)
    prompt_rows = (rows[:, None] * t + torch.arange(t)[None]).flatten()
    ref_prompts = index["vocabulary"]["test_class_names_prompts"]
    same = [prompts[i] for i in prompt_rows.tolist()] == ref_prompts
    checks.append(Check("text.prompts", same, f"{len(ref_prompts)} prompt strings " + ("identical" if same else "differ")))
    checks.append(
        _float_check("text.prompt_embed_raw", got["text.prompt_embed_raw"][prompt_rows], tensors["text.prompt_embed_raw"].float())
    )
    checks.append(
        _float_check(
            "text.test_text_classifier",
            got["text.test_text_classifier"][rows.to(got["text.test_text_classifier"].device)],
            tensors["text.test_text_classifier"].float(),
        )
    )
    with_void = got["text.text_classifier_with_void"]
    rows_void = torch.cat([rows, torch.tensor([with_void.shape[0] - 1])]).to(with_void.device)
    checks.append(_float_check("text.text_classifier_with_void", with_void[rows_void], tensors["text.text_classifier_with_void"].float()))
    seen = torch.equal(got["text.category_overlapping_mask"].cpu(), tensors["text.category_overlapping_mask"].cpu())
    checks.append(
        Check(
            "text.category_overlapping_mask",
            seen,
            f"{int(tensors['text.category_overlapping_mask'].sum())} seen classes"
            + (", identical" if seen else f"; ours {int(got['text.category_overlapping_mask'].sum())}"),
        )
    )
    checks.append(
        _float_check("predictor.logit_scale_param", got["predictor.logit_scale_param"], tensors["predictor.logit_scale_param"].float())
    )
    return checks


@torch.no_grad()
def verify_fcclip(fx: FcclipFixture, model=None, device: str = "cpu") -> list[Check]:
    """Every check of the FC-CLIP fixture: text, both inputs, the training record."""
    from odise_pl.reference.fcclip_train_record import check_fcclip_training_record

    with strict_fp32(device):
        if model is None:
            model, _ = build_fcclip_fixture_model(fx, device=device)
        tensors = {k: v.to(device) for k, v in fx.load_tensors().items()}
        index = fx.load_index()
        checks = text_checks(model, tensors, index)
        for prefix in ("inA", "inB"):
            checks += compare_fcclip_input(model, tensors, index["inputs"][prefix], prefix)
        record = {k: v.to(device) for k, v in fx.load_train_record().items()}
        checks += check_fcclip_training_record(model, record, index["train"])
    return checks


__all__ = ["compare_fcclip_input", "text_checks", "verify_fcclip"]
