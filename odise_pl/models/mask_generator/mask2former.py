"""Mask2Former mask generator on external multi-scale features, built from ``transformers`` parts.

The pixel decoder (multi-scale deformable attention, pure PyTorch -- no CUDA ops
to compile) and the masked-attention transformer decoder are
``transformers``' own modules; this file wires them to the backbone pyramid and
adds ODISE's mask-embedding head (:class:`PooledMaskEmbed`).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPreTrainedModel,
    Mask2FormerTransformerModule,
)

from odise_pl.config.schema import MaskGeneratorConfig
from odise_pl.errors import ConfigError
from odise_pl.models.backbones.base import LEVELS, ShapeSpec
from odise_pl.models.mask_generator.init import apply_init


def hf_config(cfg: MaskGeneratorConfig, strides: list[int]) -> Mask2FormerConfig:
    """Translate our reference-named settings into a ``Mask2FormerConfig``."""
    return Mask2FormerConfig(
        backbone_config=None,
        feature_size=cfg.mask_dim,
        mask_feature_size=cfg.mask_dim,
        hidden_dim=cfg.hidden_dim,
        encoder_feedforward_dim=cfg.enc_feedforward_dim,
        encoder_layers=cfg.enc_layers,
        decoder_layers=cfg.dec_layers + 1,  # transformers counts the query-only prediction as a layer
        num_attention_heads=cfg.nheads,
        dim_feedforward=cfg.dim_feedforward,
        num_queries=cfg.num_queries,
        feature_strides=list(strides),
        common_stride=4,
        no_object_weight=cfg.no_object_weight,
        class_weight=cfg.class_weight,
        mask_weight=cfg.mask_weight,
        dice_weight=cfg.dice_weight,
        train_num_points=cfg.train_num_points,
        oversample_ratio=cfg.oversample_ratio,
        importance_sample_ratio=cfg.importance_sample_ratio,
        use_auxiliary_loss=cfg.deep_supervision,
        num_labels=1,
    )


class MLP(nn.Module):
    """Mask2Former's MLP: ``layers`` Linear layers with ReLU between them (keys ``layers.{i}``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def hard_mask_pool(features: torch.Tensor, mask_logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Average ``features`` (B,C,h,w) inside each binarised mask (B,Q,h,w) -> (B,Q,C).

    As the reference's ``MaskPooling``: ``sigmoid(logits) > threshold`` on the detached logits,
    divided by ``area + 1e-8`` (an empty mask pools to zeros).
    """
    mask = (mask_logits.detach().sigmoid() > threshold).to(features.dtype)
    denorm = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, mask / denorm)


class PooledMaskEmbed(nn.Module):
    """ODISE's mask embedding (the reference's ``PooledMaskEmbed``), per decoder output.

    ``x = pool_proj(hard_mask_pool(mask_features, mask_logits)) + q`` with ``q = decoder_norm(query)``
    and ``pool_proj = Linear(LayerNorm(.))``; then ``mask_embed = MLP3(LayerNorm(x))``. The pooled
    features and the query are added *before* the LayerNorm + MLP, which sees both.
    With ``pre_mlp_norm=False`` it is FC-CLIP's class embedding: ``MLP3(x)``, no LayerNorm before
    the MLP (``_mask_pooling_proj`` / ``class_embed`` in fc-clip's decoder); keys
    ``mask_embed.layers.{0,1,2}`` instead of ``mask_embed.0`` (the norm) + ``mask_embed.1.layers.*``.

    Shape:
        queries (B,Q,C), mask_logits (B,Q,h,w), mask_features (B,M,h,w) -> (B,Q,D); M == C.
    """

    def __init__(self, hidden_dim: int, mask_dim: int, embed_dim: int, *, pre_mlp_norm: bool = True) -> None:
        super().__init__()
        if hidden_dim != mask_dim:
            raise ConfigError(
                f"PooledMaskEmbed adds pooled mask features ({mask_dim}) to the queries "
                f"({hidden_dim}): model.mask_generator.mask_dim must equal hidden_dim"
            )
        self.pool_proj = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, hidden_dim))
        mlp = MLP(mask_dim, hidden_dim, embed_dim, 3)
        self.mask_embed = nn.Sequential(nn.LayerNorm(mask_dim), mlp) if pre_mlp_norm else mlp
        self.embed_dim = embed_dim

    def pooled(self, queries: torch.Tensor, mask_logits: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """The MLP's input ``pool_proj(pooled) + queries`` (B,Q,C) (the reference's ``mask_pooled_features``)."""
        return self.pool_proj(hard_mask_pool(mask_features, mask_logits)) + queries

    def forward(self, queries: torch.Tensor, mask_logits: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        return self.mask_embed(self.pooled(queries, mask_logits, mask_features))


class Mask2FormerMaskGenerator(Mask2FormerPreTrainedModel):
    """Pixel decoder + masked-attention decoder + mask-embedding head.

    ``forward(features)`` takes the backbone pyramid ``{"s2".."s5"}`` and returns
    ``{"pred_masks": [L x (B,Q,H/4,W/4)], "mask_embeds": [L x (B,Q,D)]}`` with one entry
    per supervised decoder output (the query-only prediction first, the last layer
    last; ``L = dec_layers + 1``), ``"queries"`` [L x (B,Q,C)] (``decoder_norm(query)``, what the
    caption model's binary head reads), ``"mask_features"`` (B,M,H/4,W/4) and the pixel decoder's
    ``"multi_scale_features"`` (3, low to high resolution).

    The constructor initialises the weights as ``transformers`` does; :meth:`from_config` then applies
    ``model.mask_generator.init`` (default ``mask2former``: the original code's, :mod:`.init`).
    """

    def __init__(
        self,
        *,
        config: Mask2FormerConfig,
        input_shape: dict[str, ShapeSpec],
        embed_dim: int = 256,
        gradient_checkpointing: bool = False,
        pre_mlp_norm: bool = True,
    ) -> None:
        super().__init__(config)
        self.levels = [k for k in LEVELS if k in input_shape]
        channels = [input_shape[k].channels for k in self.levels]
        self.pixel_decoder = Mask2FormerPixelDecoder(config, feature_channels=channels)
        self.transformer = Mask2FormerTransformerModule(in_features=config.feature_size, config=config)
        self.mask_embed = PooledMaskEmbed(config.hidden_dim, config.mask_feature_size, embed_dim, pre_mlp_norm=pre_mlp_norm)
        self.transformer.decoder.gradient_checkpointing = gradient_checkpointing
        self.post_init()

    @classmethod
    def from_config(cls, cfg: MaskGeneratorConfig, input_shape: dict[str, ShapeSpec]) -> Mask2FormerMaskGenerator:
        strides = [input_shape[k].stride for k in LEVELS if k in input_shape]
        generator = cls(
            config=hf_config(cfg, strides),
            input_shape=input_shape,
            embed_dim=cfg.embed_dim,
            gradient_checkpointing=cfg.gradient_checkpointing,
            pre_mlp_norm=cfg.pre_mlp_norm,
        )
        apply_init(generator, cfg.init)  # model.mask_generator.init (default: the original Mask2Former's)
        return generator

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, object]:
        feats = [features[k] for k in self.levels]  # high -> low resolution
        pixel_out = self.pixel_decoder(feats, return_dict=True)
        mask_features = pixel_out.mask_features  # (B, M, H/4, W/4)
        multi_scale = pixel_out.multi_scale_features  # 3 x (B, C, h, w), low -> high res
        dec = self.transformer(multi_scale_features=multi_scale, mask_features=mask_features)
        masks = list(dec.masks_queries_logits)  # L x (B, Q, H/4, W/4)
        queries = [q.transpose(0, 1) for q in dec.intermediate_hidden_states]  # L x (B, Q, C)
        embeds = [self.mask_embed(q, m, mask_features) for q, m in zip(queries, masks)]
        return {
            "pred_masks": masks,
            "mask_embeds": embeds,
            "queries": queries,
            "mask_features": mask_features,
            "multi_scale_features": list(multi_scale),
        }


def config_summary(cfg: MaskGeneratorConfig) -> dict:
    return asdict(cfg)
