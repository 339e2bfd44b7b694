"""Run the odise-pl FC-CLIP on one fixture input and collect the tensors the official code recorded.

Every value comes out of the code that ``validate`` / ``test`` / ``predict`` run: :meth:`OdiseModule.forward`
(backbone with normalise-then-pad, mask generator, the ``clip_dense`` map), forward hooks on the parts
inside it (the trunk's stem, the Mask2Former mask-embedding MLP and attention masks), the class head's
own sub-modules, the out-of-vocabulary head (:class:`~odise_pl.models.open_vocab.dense_pooling.DenseMaskClassifier`),
the ensemble, :meth:`OdiseModule.predict_probs` and the post-processing functions. Names are the fixture's
(``predictor.aux1.class_embed``, ``oov.pooled_clip_feature``, ``ens.cls_results``, ...).
"""

from __future__ import annotations

import torch

from odise_pl.models.inference.segment import masks_to_output
from odise_pl.models.inference.semantic import semantic_inference
from odise_pl.models.mask_generator.mask2former import hard_mask_pool
from odise_pl.models.open_vocab.dense_pooling import mask_average_pool
from odise_pl.models.open_vocab.ensemble import mixed_log_probs
from odise_pl.reference.capture import pad_to


class Recorder:
    """Forward hooks inside the model: the trunk's stem, and per decoder output the Mask2Former mask
    embedding and the next layer's attention mask (``[B*heads, Q, h*w]`` bool, before the all-masked-row fix)."""

    def __init__(self, model) -> None:
        self.model = model
        self.stem: list[torch.Tensor] = []
        self.mask_embed: list[torch.Tensor] = []
        self.attn_mask: list[torch.Tensor] = []
        self.trunk_in: list[torch.Tensor] = []

    def __enter__(self) -> Recorder:
        trunk = self.model.backbone.clip.model.visual.trunk
        predictor = self.model.mask_generator.transformer.decoder.mask_predictor
        self._handles = [
            trunk.stem.register_forward_pre_hook(lambda _m, args: self.trunk_in.append(args[0].detach().clone())),
            trunk.stem.register_forward_hook(lambda _m, _a, out: self.stem.append(out.detach().clone())),
            predictor.mask_embedder.register_forward_hook(lambda _m, _a, out: self.mask_embed.append(out.detach().clone())),
            predictor.register_forward_hook(lambda _m, _a, out: self.attn_mask.append(out[1].detach().clone())),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


def layer_name(i: int, layers: int) -> str:
    """Decoder output ``i`` of ``layers`` -> the fixture's prefix (``predictor.aux0`` ... ``predictor``)."""
    return "predictor" if i == layers - 1 else f"predictor.aux{i}"


def head_tensors(model, masks: torch.Tensor, queries: torch.Tensor, mask_features: torch.Tensor, text) -> dict[str, torch.Tensor]:
    """One decoder output's FC-CLIP class head: ``maskpool_raw``, ``maskpool_proj``, ``class_embed`` and
    ``pred_logits`` (against ``text``), from its mask logits and queries."""
    head = model.mask_generator.mask_embed
    raw = hard_mask_pool(mask_features, masks)
    embed = head(queries, masks, mask_features)
    return {
        "maskpool_raw": raw,
        "maskpool_proj": head.pool_proj(raw),
        "class_embed": embed,
        "pred_logits": model.supervision.classify(embed, text),
    }


def decoder_tensors(model, gen: dict, rec: Recorder, text) -> dict[str, torch.Tensor]:
    """Every decoder output's tensors, named as the fixture (``predictor.aux0.*`` ... ``predictor.*``)."""
    out = {}
    layers = len(gen["pred_masks"])
    for i in range(layers):
        name = layer_name(i, layers)
        out[f"{name}.pred_masks"] = gen["pred_masks"][i]
        out[f"{name}.decoder_output"] = gen["queries"][i]
        out[f"{name}.mask_embed"] = rec.mask_embed[i]
        if i < len(rec.attn_mask):
            out[f"{name}.attn_mask"] = rec.attn_mask[i]
        head = head_tensors(model, gen["pred_masks"][i], gen["queries"][i], gen["mask_features"], text)
        out.update({f"{name}.{k}": v for k, v in head.items()})
    return out


def oov_tensors(model, dense: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The out-of-vocabulary head and the ensemble on the final layer (``oov.*``, ``ens.*``)."""
    head = model.open_vocab
    pool = head.mask_classifier
    for_pooling = pool.masks_for_pooling(dense, masks)
    embeds, valid = pool(dense, masks)
    oov = pool.logits(embeds, head.text.to(embeds.device))
    ens = head.ensemble
    mix = mixed_log_probs(
        logits[..., :-1].log_softmax(-1), oov.log_softmax(-1), ens.seen, ens.alpha, ens.beta, valid if head.ensemble_on_valid_mask else None
    )
    seen = ens.seen.to(mix.dtype)
    fused = ens(logits, oov, valid if head.ensemble_on_valid_mask else None)
    return {
        "oov.mask_for_pooling": for_pooling,
        "oov.maskpool_raw": mask_average_pool(dense.float(), for_pooling),
        "oov.pooled_clip_feature": embeds,
        "oov.out_vocab_logits": oov,
        "ens.in_vocab_probs": logits[..., :-1].softmax(-1),
        "ens.out_vocab_probs": oov.softmax(-1),
        "ens.cls_logits_seen": mix * seen,
        "ens.cls_logits_unseen": mix * (1 - seen),
        "ens.cls_results": mix,
        "ens.is_void_prob": logits.softmax(-1)[..., -1:],
        "ens.mask_cls_probs": fused,
        "ens.mask_cls_results": (fused + 1e-8).log(),
    }


def text_tensors(model, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The test text classifier: raw embeddings of ``prompts`` (the bank's name x template strings), the
    bank's rows, and those rows with the void vector appended; the seen mask."""
    bank = model.text_bank
    raw = torch.cat([bank.clip.encode_text(prompts[i : i + bank.chunk_size]).float() for i in range(0, len(prompts), bank.chunk_size)])
    rows = model.eval_text.embeds
    return {
        "text.prompt_embed_raw": raw,
        "text.test_text_classifier": rows,
        "text.text_classifier_with_void": torch.cat([rows, model.supervision.void_vector()[None].to(rows)]),
        "text.category_overlapping_mask": model.open_vocab.ensemble.seen.long(),
        "predictor.logit_scale_param": model.supervision.logit_scale.detach(),
    }


@torch.no_grad()
def capture_fcclip(model, image: torch.Tensor, height: int, width: int) -> dict:
    """Run the eval-mode FC-CLIP ``model`` on one (3,H,W) 0..255 image as the reference does (normalise,
    pad to /32 with 0), and return ``{name: tensor}`` named as the fixture, plus the post-processing's
    inputs under the names :func:`~odise_pl.reference.postprocess_checks.discrete_checks` reads."""
    images = pad_to(image.float(), model.backbone.size_divisibility)
    sizes = torch.tensor([list(image.shape[-2:])], device=images.device)
    feats: dict = {}
    hook = model.backbone.register_forward_hook(lambda _m, _a, out: feats.update(out))
    try:
        with Recorder(model) as rec:
            gen = model(images, None, sizes)  # OdiseModule.forward: the path of segment()
    finally:
        hook.remove()
    got = {"backbone.in": rec.trunk_in[0], "backbone.stem": rec.stem[0], "backbone.clip_vis_dense": gen["clip_dense"]}
    got.update({f"backbone.res{i + 2}": feats[level] for i, level in enumerate(("s2", "s3", "s4", "s5"))})
    got["pixel_decoder.mask_features"] = gen["mask_features"]
    for i, level in enumerate(("res5", "res4", "res3")):
        got[f"pixel_decoder.multi_scale_features.{i}_{level}"] = gen["multi_scale_features"][i]
    text = model.eval_text
    got.update(decoder_tensors(model, gen, rec, text))
    masks, logits = gen["pred_masks"][-1], got["predictor.pred_logits"]
    got.update(oov_tensors(model, gen["clip_dense"], masks, logits))
    padded = tuple(images.shape[-2:])
    got["ens.mask_pred_upsampled"] = masks_to_output(masks[0], padded, padded, padded)[None]
    probs, masks = model.predict_probs(images, gen, sizes)
    got["final.mask_cls.log_softmax"] = probs[0].log()
    got["final.mask_pred"] = masks_to_output(masks[0], tuple(image.shape[-2:]), (height, width), padded)
    sem = semantic_inference(probs[0], got["final.mask_pred"])
    got["final.sem_seg"], got["final.sem_seg_max"] = sem, sem.max(0).values
    return got


__all__ = ["Recorder", "capture_fcclip", "decoder_tensors", "head_tensors", "layer_name", "oov_tensors", "text_tensors"]
