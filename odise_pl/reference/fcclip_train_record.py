"""The FC-CLIP fixture's training record: one training forward of the official code, replayed in odise-pl.

``fcclip_tiny_train.safetensors`` holds the first input with its COCO ground truth (17 masks), every
decoder output of the training-mode forward, the matcher indices of every layer, the final layer's
matcher and loss points, and every raw and weighted loss (torch seed 2024 before the forward; the
first draw is the final layer's matcher). Checks, each with its tolerance:

* the training text classifier (FC-CLIP's COCO list, 254 names) and every decoder output (mask logits,
  queries, mask embedding, the class head, logits over the 133 training classes + void): rel. L2 <= 1e-4;
* the targets: labels and masks exactly;
* on the *recorded* outputs: the final layer's matching with the recorded matcher points (indices
  exactly), its class / mask / dice losses with the recorded loss points, and every layer's class loss
  from the recorded indices: <= 1e-6 relative (identical inputs, float32 rounding only);
* odise-pl's own training step, torch seeded as the reference at the criterion (the RNG is consumed in
  the same order): every layer's matcher indices exactly and all 12 weighted losses within 1e-4 relative.
"""

from __future__ import annotations

import torch

from odise_pl.reference.capture import pad_to
from odise_pl.reference.checks import REL_TOL, Check, rel_l2
from odise_pl.reference.discrete import unpack_masks
from odise_pl.reference.fcclip_capture import Recorder, decoder_tensors, layer_name
from odise_pl.reference.train_record import replayed_points

EXACT_TOL = 1e-6
#: odise-pl's loss names (transformers') -> the reference's
LOSS_NAMES = {"loss_cross_entropy": "loss_ce", "loss_mask": "loss_mask", "loss_dice": "loss_dice"}
PREFIX = "train/inA"


def _rel(a, b) -> float:
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) / max(abs(b), 1e-12)


def _reference_name(ours: str) -> str:
    """``loss_cross_entropy_1`` -> ``loss_ce_1``."""
    base, _, layer = ours.rpartition("_") if ours[-1].isdigit() else (ours, "", "")
    return LOSS_NAMES[base] + (f"_{layer}" if layer else "")


def record_targets(record: dict, size: tuple[int, int]) -> list[dict]:
    """The recorded targets (``prepare_targets``: masks padded to the input) as odise-pl's target dicts."""
    labels = record[f"{PREFIX}/targets.img0.labels"].long()
    masks = unpack_masks(record[f"{PREFIX}/targets.img0.masks_packbits"], size[1]).to(labels.device)
    return [{"masks": masks, "labels": labels, "iscrowd": torch.zeros(len(labels), dtype=torch.bool, device=labels.device)}]


def _layers(record: dict) -> list[str]:
    names = sorted(
        {k[len(PREFIX) + 1 :].rsplit(".", 1)[0] for k in record if k.startswith(f"{PREFIX}/predictor") and k.endswith(".pred_masks")}
    )
    return [n for n in names if n != "predictor"] + ["predictor"]


def _indices(record: dict, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        record[f"{PREFIX}/criterion.{layer}.indices.img0.query"].long(),
        record[f"{PREFIX}/criterion.{layer}.indices.img0.target"].long(),
    )


def _same_indices(ours, ref) -> bool:
    return all(torch.equal(torch.as_tensor(a).long().cpu(), b.cpu()) for a, b in zip(ours, ref))


def stored_point_checks(model, record: dict, targets: list[dict]) -> list[Check]:
    """Matching and losses on the recorded outputs: exact inputs, so float32 rounding only."""
    loss = model.criterion.loss
    masks = [t["masks"].float() for t in targets]
    labels = [t["labels"] for t in targets]
    final_masks, final_logits = record[f"{PREFIX}/predictor.pred_masks"], record[f"{PREFIX}/predictor.pred_logits"]
    points = [record[f"{PREFIX}/criterion.final.matcher_point_coords.img0"]]
    loss_points = record[f"{PREFIX}/criterion.final.loss_point_coords"]
    checks = []
    with replayed_points(points, loss_points, loss):
        indices = loss.matcher(final_masks, final_logits, masks, labels)
    ref = _indices(record, "final")
    same = _same_indices(indices[0], ref)
    checks.append(
        Check(
            "train/criterion.final.indices (stored matcher points)",
            same,
            f"{len(ref[0])} matches " + ("identical" if same else f"differ: {indices[0]}"),
        )
    )
    num = loss.get_num_masks(labels, device=final_masks.device)
    with replayed_points([], loss_points, loss):
        raw = {**loss.loss_masks(final_masks, masks, [ref], num), **loss.loss_labels(final_logits, labels, [ref])}
    for ours, name in LOSS_NAMES.items():
        err = _rel(raw[ours], record[f"{PREFIX}/criterion.raw.{name}"])
        checks.append(
            Check(
                f"train/criterion.raw.{name} (stored points)",
                err <= EXACT_TOL,
                f"{float(raw[ours]):.7f} vs {float(record[f'{PREFIX}/criterion.raw.{name}']):.7f} (rel {err:.1e})",
            )
        )
    for i in range(len(_layers(record)) - 1):  # every auxiliary layer's class loss from its recorded indices
        logits = record[f"{PREFIX}/predictor.aux{i}.pred_logits"]
        ce = loss.loss_labels(logits, labels, [_indices(record, f"aux{i}")])["loss_cross_entropy"]
        err = _rel(ce, record[f"{PREFIX}/criterion.raw.loss_ce_{i}"])
        checks.append(Check(f"train/criterion.raw.loss_ce_{i} (stored indices)", err <= EXACT_TOL, f"{float(ce):.7f} (rel {err:.1e})"))
    return checks


def check_fcclip_training_record(model, record: dict, index: dict) -> list[Check]:
    """Every check of the training record (see the module docstring)."""
    checks: list[Check] = []
    image = record[f"{PREFIX}/image"].float()
    images = pad_to(image, model.backbone.size_divisibility)
    sizes = torch.tensor([list(image.shape[-2:])], device=images.device)
    targets = record_targets(record, tuple(images.shape[-2:]))
    sup, crit = model.supervision, model.criterion
    checks.append(_close("train/text.train_text_classifier", sup.train_embeds, record))
    same = torch.equal(targets[0]["labels"].cpu(), record[f"{PREFIX}/gt_classes"].long().cpu())
    checks.append(
        Check(
            "train/targets.img0.labels",
            same,
            f"{len(targets[0]['labels'])} segments, labels " + ("identical to gt_classes" if same else "differ from gt_classes"),
        )
    )
    was_training = model.training
    model.train()
    try:
        with torch.no_grad(), Recorder(model) as rec:
            gen = model(images, None, sizes)  # normalise, then pad with 0 (the reference's training forward too)
        got = decoder_tensors(model, gen, rec, sup.train_text)
        for layer in _layers(record):
            for what in ("pred_masks", "decoder_output", "mask_embed", "maskpool_raw", "maskpool_proj", "class_embed", "pred_logits"):
                checks.append(_close(f"{PREFIX}/{layer}.{what}", got[f"{layer}.{what}"], record))
        checks += stored_point_checks(model, record, targets)
        logits = [got[f"{layer_name(i, len(gen['pred_masks']))}.pred_logits"] for i in range(len(gen["pred_masks"]))]
        matched: list = []
        hook = crit.loss.matcher.register_forward_hook(lambda _m, _a, out: matched.append(out))
        try:
            torch.manual_seed(int(index["seed"]))  # the reference's state at its criterion (nothing drawn before)
            with torch.no_grad():
                losses = crit(gen["pred_masks"], logits, targets)
        finally:
            hook.remove()
        order = ["final"] + [f"aux{i}" for i in range(len(matched) - 1)]  # transformers' order, as the reference's
        for layer, found in zip(order, matched):
            ref = _indices(record, layer)
            same = _same_indices(found[0], ref)
            checks.append(
                Check(
                    f"train/criterion.{layer}.indices (training step, seeded)",
                    same,
                    f"{len(ref[0])} matches " + ("identical" if same else "differ"),
                )
            )
        for ours, value in losses.items():
            name = f"{PREFIX}/losses.{_reference_name(ours)}"
            err = _rel(value, record[name])
            checks.append(
                Check(name + " (training step, seeded)", err <= REL_TOL, f"{float(value):.6f} vs {float(record[name]):.6f} (rel {err:.1e})")
            )
    finally:
        model.train(was_training)
    return checks


def _close(name: str, ours: torch.Tensor, record: dict) -> Check:
    err = rel_l2(ours, record[name])
    return Check(name, err <= REL_TOL, f"rel L2 {err:.1e}" + ("" if err <= REL_TOL else f" > {REL_TOL:g}"))


__all__ = ["check_fcclip_training_record", "record_targets", "stored_point_checks"]
