"""Run an odise-pl model on one fixture input and collect the tensors the reference recorded.

Every value comes out of the code that ``validate`` / ``test`` / ``predict`` run: forward hooks
on the backbone's parts read the windows, taps, latents and conditioning as the model computes
them; the rest are the outputs of :meth:`OdiseModule.predict_probs`, :meth:`~OdiseModule.masks_to_output`
and the post-processing functions. Names are the fixture's (``crop0/tap0.vae_enc.block5``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import torch
import torch.nn.functional as F

from odise_pl.models.inference.instance import instance_inference
from odise_pl.models.inference.panoptic import panoptic_inference
from odise_pl.models.inference.semantic import semantic_inference
from odise_pl.models.open_vocab.ensemble import geometric_ensemble

TAP_NAMES = (
    "tap0.vae_enc.block5",
    "tap1.vae_enc.block7",
    "tap2.unet.output_blocks2",
    "tap3.unet.output_blocks5",
    "tap4.unet.output_blocks8",
    "tap5.unet.output_blocks11",
    "tap6.vae_dec.block2",
    "tap7.vae_dec.block5",
)


def pad_to(image: torch.Tensor, divisor: int) -> torch.Tensor:
    """(3,H,W) -> (1,3,H',W') zero-padded to multiples of ``divisor`` (detectron2's ImageList)."""
    h, w = image.shape[-2:]
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    return F.pad(image[None], (0, pw - w, 0, ph - h))


class _Windows:
    """Forward hooks on the diffusion backbone: per-window tensors, in window order."""

    def __init__(self, backbone) -> None:
        self.backbone = backbone
        self.windows: list[dict[str, torch.Tensor]] = []

    def __enter__(self) -> _Windows:
        bb = self.backbone
        self._handles = [
            bb.vae.encoder.register_forward_pre_hook(self._encoder_in),
            bb.vae.quant_conv.register_forward_hook(self._latent),
            bb.unet.register_forward_pre_hook(self._unet_in, with_kwargs=True),
            bb.fusion.register_forward_pre_hook(self._taps),
            bb.fusion.register_forward_hook(self._proj),
        ]
        if bb.captioner is not None:
            self._handles.append(bb.captioner.register_forward_hook(self._caption))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def _new(self) -> dict:
        self.windows.append({})
        return self.windows[-1]

    def _encoder_in(self, _m, args) -> None:
        self._new()["extractor.in.img"] = (args[0] * 0.5 + 0.5).detach().clone()  # back to [0, 1]

    def _latent(self, _m, _args, out) -> None:
        mean = out[:, : out.shape[1] // 2]
        self.windows[-1]["ldm.latent"] = (mean * self.backbone.vae.config.scaling_factor).detach().clone()

    def _unet_in(self, _m, args, kwargs) -> None:
        self.windows[-1]["ldm.noisy_latent"] = (args[0] if args else kwargs["sample"]).detach().clone()

    def _caption(self, _m, _args, out) -> None:
        cond, time_term = out
        self.windows[-1]["captioner.cond_inputs"] = cond.detach().clone()
        if time_term is not None:
            self.windows[-1]["captioner.cond_emb"] = time_term[:, None].detach().clone()

    def _taps(self, _m, args) -> None:
        for name, tap in zip(TAP_NAMES, args[0]):
            self.windows[-1][name] = tap.detach().clone()

    def _proj(self, _m, _args, out) -> None:
        for name, value in out.items():
            self.windows[-1][f"window.proj.{name}"] = value.detach().clone()


def _wrap_prefix(captioner, sink: list) -> Callable:
    """``captioner.image_embedding`` that also appends each (B, E) CLIP prefix to ``sink``."""
    original = captioner.image_embedding

    def image_embedding(images):
        value = original(images)
        sink.append(value.detach().clone())
        return value

    return image_embedding


@torch.no_grad()
def capture(model, image: torch.Tensor, height: int, width: int, *, overlap0: bool = True) -> dict:
    """Run ``model`` (an eval-mode :class:`OdiseModule`) on one (3,H,W) 0..255 image, as the reference does.

    Returns ``{name: tensor}`` named as the fixture, plus ``segments_info`` / ``segments_info_overlap0``
    (lists of ``{"id", "category_id", "isthing"}``) and ``instances`` (scores, classes, packed masks).
    """
    backbone = model.backbone
    images = pad_to(image.float(), getattr(backbone, "size_divisibility", 64))
    image_sizes = torch.tensor([list(image.shape[-2:])], device=images.device)
    out_t: dict = {}
    prefixes: list[torch.Tensor] = []
    with ExitStack() as stack:
        windows = stack.enter_context(_Windows(backbone)) if hasattr(backbone, "vae") else None
        if getattr(backbone, "captioner", None) is not None:
            backbone.captioner.image_embedding = _wrap_prefix(backbone.captioner, prefixes)
            stack.callback(lambda: delattr(backbone.captioner, "image_embedding"))
        feats = backbone(images)
        gen = model.mask_generator(feats)
    if windows is not None:
        for i, win in enumerate(windows.windows):
            if i < len(prefixes):
                win["captioner.prefix"] = prefixes[i]
            out_t.update({f"crop{i}/{k}": v for k, v in win.items()})
    out_t.update({f"backbone.out.{k}": v for k, v in feats.items()})
    out_t["pixel_decoder.mask_features"] = gen["mask_features"]
    for i, (level, f) in enumerate(zip(("s5", "s4", "s3"), gen["multi_scale_features"])):
        out_t[f"pixel_decoder.multi_scale_features.{i}_{level}"] = f
    layers = len(gen["pred_masks"])
    for i in range(layers):
        prefix = "predictor" if i == layers - 1 else f"predictor.aux{i}"
        out_t[f"{prefix}.pred_masks"] = gen["pred_masks"][i]
        out_t[f"{prefix}.mask_embed"] = gen["mask_embeds"][i]
        out_t[f"{prefix}.decoder_output"] = gen["queries"][i]
    head = model.mask_generator.mask_embed
    out_t["predictor.mask_pooled_features"] = head.pooled(gen["queries"][-1], gen["pred_masks"][-1], gen["mask_features"])
    sup = model.supervision
    out_t["predictor.logit_scale"] = sup.classifier.scale() if hasattr(sup, "classifier") else sup.scale()
    text = model.eval_text
    proj = sup.classifier.text_proj if hasattr(sup, "classifier") else sup.text_proj
    head_name = "category_head" if hasattr(sup, "classifier") else "word_head"
    out_t[f"{head_name}.clip_text_embed_raw"] = text.embeds
    out_t[f"{head_name}.text_embed"] = proj(text.embeds)
    if hasattr(sup, "classifier"):
        out_t["category_head.null_embed"] = proj(sup.classifier.void_embed)[None]
    queries = {"queries": gen["queries"][-1]} if model._query_kwargs(gen["queries"][-1]) else {}
    logits = sup.classify(gen["mask_embeds"][-1], text, **queries)  # (1,Q,K+1), void last
    if hasattr(sup, "object_head"):
        out_t["predictor.pred_logits"] = sup.object_head(gen["queries"][-1])
        for i in range(layers - 1):
            out_t[f"predictor.aux{i}.pred_logits"] = sup.object_head(gen["queries"][i])
        out_t["pred_open_logits"] = logits[..., :-1]
    else:
        out_t["pred_logits"] = logits
        out_t["clip_head.in.pred_open_logits"] = logits[..., :-1]
    vocab = model.open_vocab
    masks = gen["pred_masks"][-1]
    if vocab is not None:
        out_t["clip_head.clip_text_embed_raw"] = vocab.text.embeds
        embeds = vocab.mask_classifier(images, masks, image_sizes)
        out_t["clip_head.mask_embed"] = embeds
        clip_logits = vocab.mask_classifier.logits(embeds, vocab.text)
        out_t["clip_head.mask_pred_open_logits"] = clip_logits
        fused = geometric_ensemble(
            logits,
            clip_logits,
            vocab.ensemble.seen,
            alpha=vocab.ensemble.alpha,
            beta=vocab.ensemble.beta,
            mode=vocab.mode,
        )
        out_t["clip_head.pred_open_logits.log_softmax"] = (fused[..., :-1] / (1 - fused[..., -1:])).log()
    probs, masks = model.predict_probs(images, gen, image_sizes)
    out_t["final.mask_cls.log_softmax"] = probs[0].log()
    m = model.masks_to_output(masks[0], tuple(image.shape[-2:]), (height, width), tuple(images.shape[-2:]))
    out_t["final.mask_pred"] = m
    sem = semantic_inference(probs[0], m)
    out_t["final.sem_seg"] = sem
    out_t["final.sem_seg_max"], argmax = sem.max(0)
    out_t["final.sem_seg_argmax"] = argmax.to(torch.int32)
    cfg = model.inference_cfg
    for name, overlap in (("", cfg.overlap_threshold), ("_overlap0", 0.0)):
        ids, segs = panoptic_inference(
            probs[0],
            m,
            model.eval_is_thing,
            object_mask_threshold=cfg.object_mask_threshold,
            overlap_threshold=overlap,
        )
        out_t[f"final.panoptic_seg{name}"] = ids.to(torch.int32)
        out_t[f"segments_info{name}"] = [{"id": s["id"], "category_id": s["category"], "isthing": s["isthing"]} for s in segs]
    inst = instance_inference(probs[0], m, model.eval_is_thing, topk=cfg.instance_topk)
    out_t["final.instances.scores"] = inst["scores"]
    out_t["final.instances.pred_classes"] = inst["labels"]
    out_t["final.instances.pred_masks_packbits"] = torch.from_numpy(np.packbits(inst["masks"].cpu().numpy().astype(bool), axis=-1))
    return out_t


__all__ = ["TAP_NAMES", "capture", "pad_to"]
