"""FC-CLIP's category-label supervision: masks classified in CLIP's own text space.

Against :mod:`.category_label` (ODISE), as fc-clip @ 2b0bbe2 computes it:

* no trainable text projection: the mask embedding (CLIP's embed dim, e.g. 768) is compared with
  the CLIP text embeddings themselves;
* the text embeddings are the 14 ViLD templates (:data:`~odise_pl.models.open_vocab.text_bank.VILD_TEMPLATES`)
  per name, each normalised, averaged, normalised again (``fcclip.py:196-214``);
* the void class is a free learnable vector ``void_embedding`` = ``nn.Embedding(1, E)`` (PyTorch's
  N(0, 1) init), normalised at use and appended as the last row (``fcclip.py:134, 325-327``);
* ``logits = clamp(exp(logit_scale), 100) * cos(mask embedding, text)``, the maximum over each class's
  names, then the void column (``get_classification_logits``, ``fcclip_transformer_decoder.py:38-54``);
  ``logit_scale`` learnable, init log(1/0.07). It is a plain parameter (FC-CLIP decays it; the void
  embedding is an ``nn.Embedding``, undecayed by ``optim.no_decay: norm_and_embedding``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.errors import ConfigError
from odise_pl.models.open_vocab.text_bank import VILD_TEMPLATES
from odise_pl.models.supervision.base import SupervisionStrategy, TextEmbeddings, max_over_synonyms
from odise_pl.registry import SUPERVISIONS


@dataclass
class FcclipLabelConfig:
    prompt_templates: list = field(default_factory=lambda: list(VILD_TEMPLATES))
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0


@SUPERVISIONS.register("fcclip_label", config=FcclipLabelConfig)
class FcclipLabelSupervision(SupervisionStrategy):
    """Cosine classifier against normalised CLIP text embeddings, with a learnable void vector.

    Args:
        train_text: normalised text embeddings of the training vocabulary (frozen; not in checkpoints).
        embed_dim: E, the mask embedding width; must be the CLIP text embedding width.
        train_names: the training vocabulary (one list of names per class).

    Shape:
        ``classify(mask_embeds (B,Q,E), text)`` -> (B,Q,K+1), void last.
    """

    #: the builder embeds this strategy's vocabularies normalised (``TextEmbeddingBank(normalize=True)``)
    normalized_text = True

    def __init__(
        self,
        *,
        train_text: TextEmbeddings,
        embed_dim: int,
        train_names: list[list[str]],
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
    ) -> None:
        super().__init__()
        width = train_text.embeds.shape[-1]
        if embed_dim != width:
            raise ConfigError(
                f"fcclip_label classifies in CLIP's text space: model.mask_generator.embed_dim "
                f"({embed_dim}) must equal the CLIP text embedding width ({width}). Set "
                f"model.mask_generator.embed_dim: {width}."
            )
        self.void_embedding = nn.Embedding(1, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.logit_scale_max = float(logit_scale_max)
        self.register_buffer("train_embeds", train_text.embeds.detach().clone(), persistent=False)
        self.register_buffer("train_class_index", train_text.class_index.clone(), persistent=False)
        self.num_match_classes = train_text.num_classes
        self.train_vocabulary = train_names

    @classmethod
    def from_config(
        cls, cfg: FcclipLabelConfig, *, train_text: TextEmbeddings, embed_dim: int, train_names: list[list[str]], **_: object
    ) -> FcclipLabelSupervision:
        return cls(
            train_text=train_text,
            embed_dim=embed_dim,
            train_names=train_names,
            logit_scale_init=cfg.logit_scale_init,
            logit_scale_max=cfg.logit_scale_max,
        )

    @property
    def train_text(self) -> TextEmbeddings:
        return TextEmbeddings(self.train_embeds, self.train_class_index, self.num_match_classes)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped to ``logit_scale_max``."""
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def void_vector(self) -> torch.Tensor:
        """(E,) the normalised void embedding (the classifier's last row)."""
        return F.normalize(self.void_embedding.weight, dim=-1)[0]

    def classify(self, mask_embeds: torch.Tensor, text: TextEmbeddings, queries: torch.Tensor | None = None) -> torch.Tensor:
        """mask_embeds (B,Q,E) -> logits (B,Q,K+1), the last column void."""
        z = F.normalize(mask_embeds, dim=-1)
        rows = torch.cat([text.embeds.to(z.dtype), self.void_vector().to(z.dtype)[None]])  # (N+1, E) unit rows
        logits = self.scale() * z @ rows.t()  # (B, Q, N+1)
        class_logits = max_over_synonyms(logits[..., :-1], text.class_index.to(z.device), text.num_classes)
        return torch.cat([class_logits, logits[..., -1:]], dim=-1)

    def training_logits(self, mask_embeds: torch.Tensor, batch: dict, queries: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(mask_embeds, self.train_text)
