"""The caption fixture's training record: one training forward of the official code, replayed in odise-pl.

``odise_caption_tiny_train.safetensors`` holds a batch of two images with ground-truth masks and
captions, the words the reference sampled (NLTK chunks on fixed tags, numpy seed 12), and every
tensor up to the losses (torch seed 2024 at the criterion's entry). Checks, each with its tolerance:

* the training forward (backbone, decoder outputs, binary logits, mask embeddings): rel. L2 <= 1e-4
  (as :mod:`~odise_pl.reference.checks`);
* the word embeddings of the recorded words (CLIP of ``"a photo of a {word}."``, raw, and after
  ``text_proj``): rel. L2 <= 1e-4;
* the grounding loss of every layer on the *recorded* mask and word embeddings, and the three
  direct calls with other validity masks (incl. the NaN fallback): exact up to float32 rounding
  (<= 1e-6 relative), since the inputs are the reference's own;
* the final layer's Hungarian matching on the recorded masks/logits with the recorded matcher
  points: the recorded indices exactly; its class / mask / dice losses with the recorded loss
  points: <= 1e-6 relative (exact inputs);
* the full training step on odise-pl's own forward, torch seeded as the reference at the criterion
  (the RNG is consumed in the same order: matcher points per image, then the oversampled and the
  random points per layer): all 16 weighted losses within 1e-4 relative.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from odise_pl.models.supervision.grounding_loss import reference_grounding_loss
from odise_pl.reference.checks import REL_TOL, Check, rel_l2

EXACT_TOL = 1e-6
LOSS_NAMES = {
    "loss_cross_entropy": "loss_ce",
    "loss_mask": "loss_mask",
    "loss_dice": "loss_dice",
    "loss_grounding": "loss_mask_word",
}
GROUNDING_UNIT = {"img1_invalid": (True, False), "all_invalid": (False, False), "all_valid": (True, True)}


def _rel(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) / max(abs(b), 1e-12)


def training_batch(record: dict) -> tuple[torch.Tensor, list[dict]]:
    """The recorded images padded to a multiple of 64 (the reference's ImageList) and their targets."""
    images = [record[f"train/{n}/image"].float() for n in ("inA", "inB")]
    h = max(-(-i.shape[-2] // 64) * 64 for i in images)
    w = max(-(-i.shape[-1] // 64) * 64 for i in images)
    batch = torch.cat([F.pad(i[None], (0, w - i.shape[-1], 0, h - i.shape[-2])) for i in images])
    targets = []
    for name in ("inA", "inB"):
        masks = record[f"train/{name}/gt_masks"].bool()
        masks = F.pad(masks, (0, w - masks.shape[-1], 0, h - masks.shape[-2]))  # to the padded image, as the reference
        labels = record[f"train/{name}/gt_classes"].long()
        targets.append({"masks": masks, "labels": labels, "iscrowd": torch.zeros(len(labels), dtype=torch.bool)})
    return batch, targets


@contextmanager
def replayed_points(matcher_points: list[torch.Tensor], loss_points: torch.Tensor, loss) -> Iterator[None]:
    """Within the block, the matcher's ``torch.rand(1, P, 2)`` draws return ``matcher_points`` in order and
    the mask loss samples ``loss_points`` (the final layer's stored coordinates)."""
    queue = list(matcher_points)
    real_rand = torch.rand

    def rand(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
        if queue and shape == (1, *queue[0].shape):  # the matcher's per-image draw
            return queue.pop(0).reshape(shape).to(kwargs.get("device") or "cpu")
        return real_rand(*size, **kwargs)

    loss.sample_points_using_uncertainty = lambda logits, *args, **kw: loss_points.to(logits.device)
    torch.rand = rand
    try:
        yield
    finally:
        torch.rand = real_rand
        del loss.sample_points_using_uncertainty


def check_training_record(model, record: dict, index: dict) -> list[Check]:
    """Every check of the training record (see the module docstring); ``model`` is the caption fixture's."""
    checks: list[Check] = []
    sup, crit = model.supervision, model.criterion
    batch, targets = training_batch(record)
    words = index["words"]
    was_training = model.training
    model.train()
    try:
        feats = model.backbone(batch)
        gen = model.mask_generator(feats)
        layers = len(gen["pred_masks"])

        def close(name: str, ours: torch.Tensor, tol: float = REL_TOL) -> None:
            err = rel_l2(ours.detach(), record[name])
            checks.append(Check(name, err <= tol, f"rel L2 {err:.1e}"))

        for level in ("s4", "s5"):
            close(f"train/backbone.out.{level}", feats[level])
        logits = []
        for i in range(layers):
            prefix = "train/predictor" if i == layers - 1 else f"train/predictor.aux{i}"
            logits.append(sup.object_head(gen["queries"][i]))
            close(f"{prefix}.pred_masks", gen["pred_masks"][i])
            close(f"{prefix}.decoder_output", gen["queries"][i])
            close(f"{prefix}.pred_logits", logits[-1])
            close(f"{prefix}.mask_embed", gen["mask_embeds"][i])
        raw = sup.embed_words(words, embed_empty=True)
        close("train/word_head.word_clip_embed_raw", raw.reshape(-1, raw.shape[-1]))
        close("train/word_head.word_embed", sup.word_embeddings(words, batch.device, embed_empty=True))
        checks += _grounding(record, layers)
        checks += _final_layer_from_stored_points(model, record, targets)
        prepared = sup.prepare_targets(targets)
        torch.manual_seed(int(index["seeds"]["torch_manual_seed"]))  # the state at the reference's criterion
        losses = crit(gen["pred_masks"], logits, prepared)
        losses.update(sup.grounding_losses(gen["mask_embeds"], words))
        for ours, value in losses.items():
            base, _, layer = ours.rpartition("_") if ours[-1].isdigit() else (ours, "", "")
            name = f"train/losses.{LOSS_NAMES[base]}" + (f"_{layer}" if layer else "")
            err = _rel(value, record[name])
            checks.append(
                Check(
                    name + " (training step, seeded)",
                    err <= REL_TOL,
                    f"{float(value.detach()):.6f} vs {float(record[name]):.6f} (rel {err:.1e})",
                )
            )
    finally:
        model.train(was_training)
    return checks


def _grounding(record: dict, layers: int) -> list[Check]:
    checks = []
    words = record["train/grounding.word_embed"]
    for i in range(layers):
        layer = "final" if i == layers - 1 else f"aux{i}"
        loss = reference_grounding_loss(
            record[f"train/grounding.{layer}.mask_embed"],
            words,
            record[f"train/grounding.{layer}.logit_scale"],
            torch.tensor([True, True]),
        )
        name = f"train/grounding.{layer}.loss_mask_word"
        err = _rel(loss, record[name])
        checks.append(Check(name, err <= EXACT_TOL, f"rel {err:.1e} on the recorded embeddings"))
    for case, valid in GROUNDING_UNIT.items():
        loss = reference_grounding_loss(
            record["train/grounding.final.mask_embed"],
            words,
            record["train/grounding.final.logit_scale"],
            torch.tensor(valid),
        )
        name = f"train/grounding_unit.final.{case}.loss_mask_word"
        err = _rel(loss, record[name])
        checks.append(Check(name, err <= EXACT_TOL, f"rel {err:.1e}"))
    return checks


def _final_layer_from_stored_points(model, record: dict, targets: list[dict]) -> list[Check]:
    """Matching and losses of the final layer on the recorded outputs with the recorded sample points."""
    loss = model.criterion.loss
    masks = [t["masks"].float() for t in targets]
    labels = [torch.zeros_like(t["labels"]) for t in targets]  # captions: one class-agnostic "object"
    pred_masks, pred_logits = record["train/predictor.pred_masks"], record["train/predictor.pred_logits"]
    points = [record[f"train/criterion.final.matcher_point_coords.img{b}"] for b in range(len(targets))]
    checks = []
    with replayed_points(points, record["train/criterion.final.loss_point_coords"], loss):
        indices = loss.matcher(pred_masks, pred_logits, masks, labels)
    same = all(
        torch.equal(torch.as_tensor(q).long(), record[f"train/criterion.final.indices.img{b}.query"])
        and torch.equal(torch.as_tensor(t).long(), record[f"train/criterion.final.indices.img{b}.target"])
        for b, (q, t) in enumerate(indices)
    )
    checks.append(
        Check(
            "train/criterion.final.indices (stored matcher points)",
            same,
            "identical" if same else f"{indices}",
        )
    )
    with replayed_points(points, record["train/criterion.final.loss_point_coords"], loss):
        raw = loss(pred_masks, pred_logits, masks, labels, auxiliary_predictions=None)
    for ours, ref in (
        ("loss_cross_entropy", "loss_ce"),
        ("loss_mask", "loss_mask"),
        ("loss_dice", "loss_dice"),
    ):
        err = _rel(raw[ours], record[f"train/criterion.raw.{ref}"])
        checks.append(
            Check(
                f"train/criterion.raw.{ref} (stored points)",
                err <= EXACT_TOL,
                f"{float(raw[ours]):.7f} vs {float(record[f'train/criterion.raw.{ref}']):.7f} (rel {err:.1e})",
            )
        )
    return checks


__all__ = ["check_training_record", "replayed_points", "training_batch"]
