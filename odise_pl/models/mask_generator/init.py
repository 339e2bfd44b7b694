"""Initialise the mask generator as the original Mask2Former code does (``model.mask_generator.init``).

Our :class:`~odise_pl.models.mask_generator.mask2former.Mask2FormerMaskGenerator` is built from
``transformers``' Mask2Former modules, whose ``post_init`` draws most weights from N(0, 0.02).  The
reference (ODISE's vendored ``third_party/Mask2Former``) initialises the same tensors differently;
:func:`init_like_mask2former` re-draws every one of them by the original rule.  Original module ->
the ``transformers`` module it corresponds to (the names of transformers' Mask2Former conversion):

Pixel decoder (``MSDeformAttnPixelDecoder`` -> ``Mask2FormerPixelDecoder``):
  * ``input_proj.i.0`` -> ``input_projections.i.0``: xavier-uniform, bias 0 (GroupNorm: 1 / 0);
  * ``transformer.encoder.layers.j`` -> ``encoder.layers.j``: every weight with dim > 1 xavier-uniform;
    ``linear1/2`` -> ``fc1/fc2`` biases keep PyTorch's default draw, **the same in every layer** (the
    original clones one layer ``enc_layers`` times); then ``MSDeformAttn._reset_parameters`` on
    ``self_attn``: ``sampling_offsets`` weight 0 and bias the grid (head ``h`` points along angle
    ``2 pi h / nheads``, scaled to a max-norm of 1, times ``point + 1``), ``attention_weights`` 0 / 0,
    ``value_proj`` / ``output_proj`` xavier-uniform, bias 0;
  * ``transformer.level_embed`` -> ``level_embed``: N(0, 1);
  * ``mask_features`` -> ``mask_projection``, ``adapter_i`` / ``layer_i`` -> the same names
    (``lateral_convolutions`` / ``output_convolutions``): detectron2's ``c2_xavier_fill``
    (``kaiming_uniform_(a=1)``, i.e. U(+-sqrt(3 / fan_in)), bias 0).

Transformer decoder (``MultiScaleMaskedTransformerDecoder`` -> ``Mask2FormerTransformerModule``):
  * ``transformer_self_attention_layers.j`` -> ``decoder.layers.j.self_attn`` (+ ``self_attn_layer_norm``):
    the ``nn.MultiheadAttention`` in-projection (3C, C) xavier-uniform, split into ``q_proj`` /
    ``k_proj`` / ``v_proj``; ``out_proj`` xavier-uniform; biases 0 (``nn.MultiheadAttention``'s);
  * ``transformer_cross_attention_layers.j`` -> ``decoder.layers.j.cross_attn`` (an
    ``nn.MultiheadAttention`` in both): the same;
  * ``transformer_ffn_layers.j`` -> ``decoder.layers.j.fc1/fc2`` (+ ``final_layer_norm``): weights
    xavier-uniform, biases PyTorch's default;
  * ``input_proj.i`` -> ``input_projections.i`` (only when in_channels != hidden_dim): ``c2_xavier_fill``;
  * ``query_feat`` / ``query_embed`` / ``level_embed`` -> ``queries_features`` / ``queries_embedder`` /
    ``level_embed``: ``nn.Embedding``'s N(0, 1);
  * ``decoder_norm`` -> ``decoder.layernorm``, ``mask_embed`` -> ``decoder.mask_predictor.mask_embedder``:
    PyTorch's defaults.

Everything else of the generator (ODISE's mask-embedding head: LayerNorms, Linears, MLP) gets PyTorch's
default initialisation, as in the reference; plain ``nn.Parameter`` s outside the modules above (e.g. a
logit scale) are left as their module set them.  The random draws themselves (the RNG stream) are not
the reference's; the distributions are.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerAttention,
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerTransformerModule,
)

from odise_pl.config.schema import MaskGeneratorConfig, choices_of
from odise_pl.errors import ConfigError

__all__ = ["INIT_MODES", "apply_init", "init_like_mask2former", "c2_xavier_fill", "deformable_offset_grid"]

#: ``model.mask_generator.init``: the original Mask2Former's rules, or transformers' own (N(0, 0.02) mostly)
INIT_MODES = choices_of(MaskGeneratorConfig, "init")  # mask2former, transformers

_DEFAULT_INIT = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm, nn.Embedding)


def apply_init(generator: nn.Module, mode: str) -> None:
    """Initialise ``generator`` by ``model.mask_generator.init`` (``transformers``: keep what it has)."""
    if mode not in INIT_MODES:
        raise ConfigError(
            f"model.mask_generator.init: '{mode}' is not one of {', '.join(INIT_MODES)} "
            "(mask2former: the original code's initialisation; transformers: its N(0, 0.02))."
        )
    if mode == "mask2former":
        init_like_mask2former(generator)


def c2_xavier_fill(conv: nn.Module) -> None:
    """detectron2 / fvcore ``c2_xavier_fill``: ``kaiming_uniform_(a=1)`` (U(+-sqrt(3 / fan_in))), bias 0."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def deformable_offset_grid(n_heads: int, n_levels: int, n_points: int) -> torch.Tensor:
    """``MSDeformAttn``'s sampling-offset bias: (n_heads * n_levels * n_points * 2,).

    Head ``h`` looks along angle ``2 pi h / n_heads`` (the direction scaled so its larger coordinate
    is +-1), point ``p`` at ``p + 1`` times that, on every level.
    """
    thetas = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = grid / grid.abs().max(-1, keepdim=True)[0]
    grid = grid.view(n_heads, 1, 1, 2).repeat(1, n_levels, n_points, 1)
    grid *= torch.arange(1, n_points + 1, dtype=torch.float32).view(1, 1, n_points, 1)
    return grid.flatten()


def init_like_mask2former(generator: nn.Module) -> None:
    """Re-initialise a ``Mask2FormerMaskGenerator`` in place by the original Mask2Former's rules (see above)."""
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, _DEFAULT_INIT):
                module.reset_parameters()
        for module in generator.modules():
            if isinstance(module, Mask2FormerPixelDecoder):
                _init_pixel_decoder(module)
            elif isinstance(module, Mask2FormerTransformerModule):
                _init_transformer_decoder(module)


def _init_pixel_decoder(decoder: Mask2FormerPixelDecoder) -> None:
    for projection in decoder.input_projections:
        nn.init.xavier_uniform_(projection[0].weight, gain=1)
        nn.init.zeros_(projection[0].bias)
    layers = list(decoder.encoder.layers)
    for p in decoder.encoder.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    for layer in layers[1:]:  # the original's encoder layers are clones of one: equal biases
        layer.fc1.bias.copy_(layers[0].fc1.bias)
        layer.fc2.bias.copy_(layers[0].fc2.bias)
    for module in decoder.encoder.modules():
        if isinstance(module, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
            _init_deformable_attention(module)
    nn.init.normal_(decoder.level_embed)
    c2_xavier_fill(decoder.mask_projection)
    for block in (*decoder.lateral_convolutions, *decoder.output_convolutions):
        c2_xavier_fill(block[0])


def _init_deformable_attention(attn: Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention) -> None:
    nn.init.zeros_(attn.sampling_offsets.weight)
    attn.sampling_offsets.bias.copy_(deformable_offset_grid(attn.n_heads, attn.n_levels, attn.n_points))
    nn.init.zeros_(attn.attention_weights.weight)
    nn.init.zeros_(attn.attention_weights.bias)
    for linear in (attn.value_proj, attn.output_proj):
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)


def _init_transformer_decoder(module: Mask2FormerTransformerModule) -> None:
    for projection in module.input_projections:
        if isinstance(projection, nn.Conv2d):
            c2_xavier_fill(projection)
    for layer in module.decoder.layers:
        _init_decoder_layer(layer)


def _init_decoder_layer(layer: Mask2FormerMaskedAttentionDecoderLayer) -> None:
    _init_split_attention(layer.self_attn)
    cross = layer.cross_attn  # nn.MultiheadAttention, as in the original
    nn.init.xavier_uniform_(cross.in_proj_weight)
    nn.init.zeros_(cross.in_proj_bias)
    nn.init.xavier_uniform_(cross.out_proj.weight)
    nn.init.zeros_(cross.out_proj.bias)
    nn.init.xavier_uniform_(layer.fc1.weight)  # FFNLayer: weights only, the biases keep the default
    nn.init.xavier_uniform_(layer.fc2.weight)


def _init_split_attention(attn: Mask2FormerAttention) -> None:
    """The original's ``nn.MultiheadAttention``: one (3C, C) xavier in-projection, split into q / k / v."""
    c = attn.embed_dim
    in_proj = torch.empty(3 * c, c, dtype=attn.q_proj.weight.dtype, device=attn.q_proj.weight.device)
    nn.init.xavier_uniform_(in_proj)
    for i, linear in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
        linear.weight.copy_(in_proj[i * c : (i + 1) * c])
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
    nn.init.xavier_uniform_(attn.out_proj.weight)
    if attn.out_proj.bias is not None:
        nn.init.zeros_(attn.out_proj.bias)
