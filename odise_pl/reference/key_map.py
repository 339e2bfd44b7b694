"""Parameter names of the released ODISE checkpoints <-> odise-pl's.

A released ``.pth`` (detectron2: ``{"model": state_dict, ...}``) holds the trainable weights
only (399 keys for the label model, 400 for the caption model; ODISE_REFERENCE.md, "Released
checkpoints"). Its names are the reference's module paths:

======================================================  ===============================================
reference (``odise.modeling``, vendored Mask2Former)    odise-pl
======================================================  ===============================================
``backbone.feature_projections.{i}.0.conv1.weight``     ``backbone.fusion.projections.{i}.conv1.0.weight``
``... .conv1.norm.{weight,bias}`` (detectron2 GN)        ``... .conv1.1.{weight,bias}``
``backbone.feature_extractor.{clip_project,...}``       ``backbone.captioner.{clip_project,...}``
``sem_seg_head.pixel_decoder.*`` (MSDeformAttn)         ``mask_generator.pixel_decoder.*`` (transformers)
``sem_seg_head.predictor.*`` (masked-attn decoder)      ``mask_generator.transformer.*`` (transformers)
``sem_seg_head.predictor.post_mask_embed.*``            ``mask_generator.mask_embed.*`` + the logit scale
``category_head.{text_proj,null_embed}``                ``supervision.classifier.{text_proj,void_embed}``
``word_head.text_proj``, ``predictor.class_embed``      ``supervision.{text_proj,object_head}``
======================================================  ===============================================

The Mask2Former names follow transformers' conversion of original Mask2Former checkpoints
(``convert_mask2former_original_pytorch_checkpoint_to_pytorch.py``): the decoder's
self-attention ``in_proj_weight`` is split into ``q_proj`` / ``k_proj`` / ``v_proj``, the
encoder's ``norm1/linear1/linear2/norm2`` are ``self_attn_layer_norm/fc1/fc2/final_layer_norm``,
and so on. :func:`reference_to_ours` maps one reference state dict onto ours and refuses any
key it cannot place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch

from odise_pl.errors import ConfigError

#: (reference pattern, odise-pl replacement) for one-to-one renames; applied in order, first match wins.
_RENAMES: list[tuple[str, str]] = [
    # backbone: tap projections (detectron2 BottleneckBlock with GroupNorm) and the implicit captioner
    (
        r"backbone\.feature_projections\.(\d+)\.0\.(conv[123]|shortcut)\.weight",
        r"backbone.fusion.projections.\1.\2.0.weight",
    ),
    (
        r"backbone\.feature_projections\.(\d+)\.0\.(conv[123]|shortcut)\.norm\.(weight|bias)",
        r"backbone.fusion.projections.\1.\2.1.\3",
    ),
    (
        r"backbone\.feature_extractor\.(clip_project|time_embed_project)\.(linear\.weight|linear\.bias|"
        r"positional_embedding)",
        r"backbone.captioner.\1.\2",
    ),
    (r"backbone\.feature_extractor\.(alpha_cond|alpha_cond_time_embed)", r"backbone.captioner.\1"),
    # pixel decoder (MSDeformAttnPixelDecoder -> transformers' Mask2FormerPixelDecoder)
    (
        r"sem_seg_head\.pixel_decoder\.input_proj\.(\d+)\.([01])\.(weight|bias)",
        r"mask_generator.pixel_decoder.input_projections.\1.\2.\3",
    ),
    (r"sem_seg_head\.pixel_decoder\.transformer\.level_embed", r"mask_generator.pixel_decoder.level_embed"),
    (
        r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\."
        r"(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)",
        r"mask_generator.pixel_decoder.encoder.layers.\1.self_attn.\2.\3",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.(weight|bias)",
        r"mask_generator.pixel_decoder.encoder.layers.\1.self_attn_layer_norm.\2",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.(weight|bias)",
        r"mask_generator.pixel_decoder.encoder.layers.\1.final_layer_norm.\2",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear([12])\.(weight|bias)",
        r"mask_generator.pixel_decoder.encoder.layers.\1.fc\2.\3",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.mask_features\.(weight|bias)",
        r"mask_generator.pixel_decoder.mask_projection.\1",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.(adapter|layer)_(\d+)\.weight",
        r"mask_generator.pixel_decoder.\1_\2.0.weight",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.(adapter|layer)_(\d+)\.norm\.(weight|bias)",
        r"mask_generator.pixel_decoder.\1_\2.1.\3",
    ),
    # transformer decoder (MultiScaleMaskedTransformerDecoder -> Mask2FormerTransformerModule)
    (
        r"sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)",
        r"mask_generator.transformer.decoder.layers.\1.cross_attn.\2",
    ),
    (
        r"sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(weight|bias)",
        r"mask_generator.transformer.decoder.layers.\1.cross_attn_layer_norm.\2",
    ),
    (
        r"sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
        r"mask_generator.transformer.decoder.layers.\1.self_attn.out_proj.\2",
    ),
    (
        r"sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(weight|bias)",
        r"mask_generator.transformer.decoder.layers.\1.self_attn_layer_norm.\2",
    ),
    (
        r"sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.linear([12])\.(weight|bias)",
        r"mask_generator.transformer.decoder.layers.\1.fc\2.\3",
    ),
    (
        r"sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)",
        r"mask_generator.transformer.decoder.layers.\1.final_layer_norm.\2",
    ),
    (
        r"sem_seg_head\.predictor\.decoder_norm\.(weight|bias)",
        r"mask_generator.transformer.decoder.layernorm.\1",
    ),
    (
        r"sem_seg_head\.predictor\.mask_embed\.layers\.(\d+)\.(weight|bias)",
        r"mask_generator.transformer.decoder.mask_predictor.mask_embedder.\1.0.\2",
    ),
    (r"sem_seg_head\.predictor\.query_embed\.weight", r"mask_generator.transformer.queries_embedder.weight"),
    (r"sem_seg_head\.predictor\.query_feat\.weight", r"mask_generator.transformer.queries_features.weight"),
    (r"sem_seg_head\.predictor\.level_embed\.weight", r"mask_generator.transformer.level_embed.weight"),
    (
        r"sem_seg_head\.predictor\.input_proj\.(\d+)\.(weight|bias)",
        r"mask_generator.transformer.input_projections.\1.\2",
    ),
    # ODISE's mask embedding head
    (
        r"sem_seg_head\.predictor\.post_mask_embed\.(pool_proj\.[01]|mask_embed\.0|mask_embed\.1\.layers\.\d+)\."
        r"(weight|bias)",
        r"mask_generator.mask_embed.\1.\2",
    ),
    # supervision: category labels / captions
    (r"category_head\.text_proj\.(weight|bias)", r"supervision.classifier.text_proj.\1"),
    (r"sem_seg_head\.predictor\.class_embed\.(weight|bias)", r"supervision.object_head.\1"),
    (r"word_head\.text_proj\.(weight|bias)", r"supervision.text_proj.\1"),
]
_COMPILED = [(re.compile(p + r"\Z"), r) for p, r in _RENAMES]

_SELF_ATTN_IN_PROJ = re.compile(r"sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)\Z")
#: the learnable temperature: one per model in the reference (post_mask_embed), owned by the supervision here
LOGIT_SCALE = "sem_seg_head.predictor.post_mask_embed.logit_scale"
#: buffers of the released format that odise-pl rebuilds itself; they must agree (checked, not loaded)
CHECKED_BUFFERS = ("criterion.empty_weight",)


def logit_scale_key(ours: Iterable[str]) -> str:
    """Where the model keeps the logit scale (the category classifier's or the caption strategy's)."""
    for key in ("supervision.classifier.logit_scale", "supervision.logit_scale"):
        if key in ours:
            return key
    raise ConfigError(
        "the model has no supervision logit scale to receive the reference's "
        f"{LOGIT_SCALE}: a category_label or caption_grounding supervision is needed"
    )


def rename(key: str, ours: Mapping[str, torch.Tensor]) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """The odise-pl key(s) one reference key feeds, each with the transform of its value.

    Returns ``[]`` for a key this mapping does not know.
    """
    if key == LOGIT_SCALE:
        return [(logit_scale_key(ours), lambda v: v)]
    if key == "category_head.null_embed":  # (1, E) -> (E,)
        return [("supervision.classifier.void_embed", lambda v: v.reshape(-1))]
    match = _SELF_ATTN_IN_PROJ.match(key)
    if match:  # nn.MultiheadAttention's packed q/k/v -> transformers' three projections
        layer, kind = match.groups()
        base = f"mask_generator.transformer.decoder.layers.{layer}.self_attn"
        return [(f"{base}.{name}_proj.{kind}", (lambda v, i=i: v.chunk(3, dim=0)[i].clone())) for i, name in enumerate(("q", "k", "v"))]
    for pattern, replacement in _COMPILED:
        if pattern.match(key):
            return [(pattern.sub(replacement, key), lambda v: v)]
    return []


def reference_to_ours(
    reference: Mapping[str, torch.Tensor],
    ours: Mapping[str, torch.Tensor],
    *,
    source: str = "the reference checkpoint",
    renamer: Callable[[str, Mapping[str, torch.Tensor]], list] = rename,
    hint: str = "label vs caption, decoder layers, tap count",
) -> dict[str, torch.Tensor]:
    """Map the trainable weights of a released ODISE state dict onto an odise-pl state dict.

    Args:
        reference: the ``"model"`` dict of a released ``.pth`` (or the trainable part of a full one).
        ours: the target model's ``state_dict()`` (tensors on any device, "meta" too): names and shapes.
        source: how errors name the file.
        renamer: ``rename`` of another method's names (FC-CLIP: :mod:`odise_pl.reference.fcclip_convert`).
        hint: what to check when a key has no place (named in the error).

    Returns:
        ``{our_key: tensor}`` for every reference key (the checked buffers excepted).

    Raises:
        ConfigError: a reference key with no place in the model, a shape that differs (both named),
            or a trainable parameter of the model that the checkpoint does not provide.
    """
    out: dict[str, torch.Tensor] = {}
    unknown, mismatched = [], []
    for key, value in reference.items():
        if key in CHECKED_BUFFERS:
            continue
        targets = renamer(key, ours)
        if not targets:
            unknown.append(key)
            continue
        for target, transform in targets:
            tensor = transform(value)
            if target not in ours:
                unknown.append(f"{key} (-> {target}, absent from the model)")
            elif tuple(ours[target].shape) != tuple(tensor.shape):
                mismatched.append(f"{key} {tuple(value.shape)} -> {target} {tuple(ours[target].shape)}")
            else:
                out[target] = tensor
    if unknown:
        raise ConfigError(
            f"{source}: {len(unknown)} key(s) have no place in this model, e.g. "
            f"{'; '.join(unknown[:5])}. Is the experiment the checkpoint's ({hint})?"
        )
    if mismatched:
        raise ConfigError(
            f"{source}: {len(mismatched)} shape(s) differ from the model built from the config, "
            f"e.g. {'; '.join(mismatched[:5])}. Set the model sizes of the checkpoint's recipe."
        )
    return out


__all__ = ["CHECKED_BUFFERS", "LOGIT_SCALE", "reference_to_ours", "rename"]
