"""Category-label supervision: masks classified against frozen CLIP text embeddings of class names.

Reference: raw class names and synonyms (no prompt template) through the frozen
CLIP text encoder -> trainable Linear(E -> D); logits = scale * cosine(mask
embedding, projected name), max over each class's synonyms; a learnable "void"
embedding initialised to CLIP("") through the same projection gives the K+1-th
logit.  The scale is learnable, initialised to log(1/0.07), exp clamped to <= 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.supervision.base import SupervisionStrategy, TextEmbeddings, max_over_synonyms
from odise_pl.registry import SUPERVISIONS


@dataclass
class CategoryLabelConfig:
    prompt_templates: list = field(default_factory=lambda: ["{}"])  # reference: the raw names
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0


class ScaledCosineClassifier(nn.Module):
    """scale * cos(mask embedding, Linear(text embedding)), max over synonyms, plus a void column."""

    def __init__(
        self, *, text_dim: int, embed_dim: int, void_text_embed: torch.Tensor, logit_scale_init: float, logit_scale_max: float
    ) -> None:
        super().__init__()
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.void_embed = nn.Parameter(void_text_embed.detach().clone().reshape(text_dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.logit_scale_max = logit_scale_max

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def forward(self, mask_embeds: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """mask_embeds (B,Q,D) -> logits (B,Q,K+1), the last column void."""
        z = F.normalize(mask_embeds, dim=-1)
        names = F.normalize(self.text_proj(text.embeds.to(z.dtype)), dim=-1)  # (N, D)
        void = F.normalize(self.text_proj(self.void_embed.to(z.dtype)), dim=-1)  # (D,)
        scale = self.scale()
        name_logits = scale * z @ names.t()  # (B, Q, N)
        class_logits = max_over_synonyms(name_logits, text.class_index.to(z.device), text.num_classes)
        void_logit = scale * (z @ void).unsqueeze(-1)  # (B, Q, 1)
        return torch.cat([class_logits, void_logit], dim=-1)


@SUPERVISIONS.register("category_label", config=CategoryLabelConfig)
class CategoryLabelSupervision(SupervisionStrategy):
    """Closed-set training on category labels, open-vocabulary at test time through the text embeddings.

    Args:
        train_text: embeddings of the training vocabulary's names (frozen; not saved in checkpoints).
        void_text_embed: (E,) CLIP text embedding of "" (initialises the learnable void embedding).
        embed_dim: D, the mask embedding width.
    """

    def __init__(
        self,
        *,
        train_text: TextEmbeddings,
        void_text_embed: torch.Tensor,
        embed_dim: int,
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
    ) -> None:
        super().__init__()
        self.classifier = ScaledCosineClassifier(
            text_dim=train_text.embeds.shape[-1],
            embed_dim=embed_dim,
            void_text_embed=void_text_embed,
            logit_scale_init=logit_scale_init,
            logit_scale_max=logit_scale_max,
        )
        self.register_buffer("train_embeds", train_text.embeds.detach().clone(), persistent=False)
        self.register_buffer("train_class_index", train_text.class_index.clone(), persistent=False)
        self.num_match_classes = train_text.num_classes

    @classmethod
    def from_config(
        cls, cfg: CategoryLabelConfig, *, train_text: TextEmbeddings, void_text_embed: torch.Tensor, embed_dim: int, **_: object
    ) -> CategoryLabelSupervision:
        return cls(
            train_text=train_text,
            void_text_embed=void_text_embed,
            embed_dim=embed_dim,
            logit_scale_init=cfg.logit_scale_init,
            logit_scale_max=cfg.logit_scale_max,
        )

    @property
    def train_text(self) -> TextEmbeddings:
        return TextEmbeddings(self.train_embeds, self.train_class_index, self.num_match_classes)

    def classify(self, mask_embeds: torch.Tensor, text: TextEmbeddings, queries: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(mask_embeds, text)

    def training_logits(self, mask_embeds: torch.Tensor, batch: dict, queries: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(mask_embeds, self.train_text)
