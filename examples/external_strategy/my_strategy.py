"""A supervision strategy that lives outside the odise_pl package (docs/supervision.md).

``fixed_scale_label`` is category-label supervision with a *fixed* logit scale: the
ablation of the learnable temperature of the built-in ``category_label``.  Cosine
similarity between each mask embedding and the projected CLIP text embedding of every
class name, times ``scale``, maximum over a class's synonyms, plus a learnable void
column.

An experiment names this file in ``imports:`` (relative to the YAML file), which
imports it before the config is validated, so ``model.supervision.name:
fixed_scale_label`` and its keys are checked like the built-in ones::

    imports: [my_strategy.py]
    model:
      supervision: {name: fixed_scale_label, scale: 20.0}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.supervision.base import SupervisionStrategy, TextEmbeddings, max_over_synonyms
from odise_pl.registry import SUPERVISIONS


@dataclass
class FixedScaleLabelConfig:
    """The YAML keys of ``model.supervision`` with ``name: fixed_scale_label``."""

    scale: float = 20.0  # the fixed logit scale (1 / temperature)
    prompt_templates: list = field(default_factory=lambda: ["{}"])  # how class names are embedded

    def problems(self) -> list[tuple[str, str]]:
        """Checked when the config is loaded, before any model part is built."""
        return [] if self.scale > 0 else [("scale", f"must be > 0, got {self.scale}.")]


@SUPERVISIONS.register("fixed_scale_label", config=FixedScaleLabelConfig)
class FixedScaleLabelSupervision(SupervisionStrategy):
    """Closed-set training on category labels with a fixed temperature.

    Args:
        train_text: CLIP text embeddings of the training vocabulary (E wide).
        void_text_embed: (E,) CLIP embedding of "" (initialises the learnable void embedding).
        embed_dim: D, the mask embedding width.
        scale: the fixed logit scale.
    """

    def __init__(self, *, train_text: TextEmbeddings, void_text_embed: torch.Tensor, embed_dim: int, scale: float) -> None:
        super().__init__()
        text_dim = train_text.embeds.shape[-1]
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.void_embed = nn.Parameter(void_text_embed.detach().clone().reshape(text_dim))
        self.register_buffer("train_embeds", train_text.embeds.detach().clone(), persistent=False)
        self.register_buffer("train_class_index", train_text.class_index.clone(), persistent=False)
        self.num_match_classes = train_text.num_classes
        self.scale = float(scale)

    @classmethod
    def from_config(
        cls, cfg: FixedScaleLabelConfig, *, train_text: TextEmbeddings, void_text_embed: torch.Tensor, embed_dim: int, **_: object
    ) -> FixedScaleLabelSupervision:
        return cls(train_text=train_text, void_text_embed=void_text_embed, embed_dim=embed_dim, scale=cfg.scale)

    def classify(self, mask_embeds: torch.Tensor, text: TextEmbeddings, queries: torch.Tensor | None = None) -> torch.Tensor:
        """mask_embeds (B, Q, D) -> logits (B, Q, K + 1), the last column void."""
        z = F.normalize(mask_embeds, dim=-1)
        names = F.normalize(self.text_proj(text.embeds.to(z.dtype)), dim=-1)  # (N, D)
        void = F.normalize(self.text_proj(self.void_embed.to(z.dtype)), dim=-1)  # (D,)
        name_logits = self.scale * z @ names.t()  # (B, Q, N)
        class_logits = max_over_synonyms(name_logits, text.class_index.to(z.device), text.num_classes)
        return torch.cat([class_logits, self.scale * (z @ void).unsqueeze(-1)], dim=-1)

    def training_logits(self, mask_embeds: torch.Tensor, batch: dict, queries: torch.Tensor | None = None) -> torch.Tensor:
        train = TextEmbeddings(self.train_embeds, self.train_class_index, self.num_match_classes)
        return self.classify(mask_embeds, train)
