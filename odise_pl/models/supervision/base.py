"""The supervision-strategy contract.

A strategy turns mask embeddings into class logits and owns its loss:

* ``classify(mask_embeds (B,Q,D), text: TextEmbeddings, queries=None) -> (B,Q,K+1)`` class
  logits over the K classes of ``text`` plus a last "void / no-object" column; ``queries``
  (B,Q,C) are the decoder's normalised queries of the same layer (``decoder_norm(query)``),
  for heads that read them (the caption model's binary head);
* ``num_match_classes``: the number of classes the Hungarian matcher and the
  Mask2Former class loss see (K for category labels, 1 = "object" for captions);
* ``training_logits(mask_embeds, batch, queries=None) -> (B,Q,num_match_classes+1)``: logits
  used for matching and the class loss during training;
* ``extra_losses(outputs, batch) -> dict[str, Tensor]``: strategy-specific losses
  (the grounding loss), unweighted; return ``{}`` if none;
* ``prepare_targets(targets) -> targets``: the targets the matcher and the class loss
  see (identity by default; the caption strategy maps every label to 0 = "object").

New strategies subclass :class:`SupervisionStrategy`, live in one file of this
folder, and register with ``@SUPERVISIONS.register("name", config=TheirConfig)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TextEmbeddings:
    """CLIP text embeddings of a vocabulary.

    Attributes:
        embeds: (N_names, E) one row per name (class names and synonyms).
        class_index: (N_names,) long, the class each name belongs to (0..K-1).
        num_classes: K.
    """

    embeds: torch.Tensor
    class_index: torch.Tensor
    num_classes: int

    def to(self, device) -> TextEmbeddings:
        return TextEmbeddings(self.embeds.to(device), self.class_index.to(device), self.num_classes)


def max_over_synonyms(name_logits: torch.Tensor, class_index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(..., N_names) -> (..., K): each class scores the maximum over its names."""
    out = name_logits.new_full((*name_logits.shape[:-1], num_classes), torch.finfo(name_logits.dtype).min)
    index = class_index.expand_as(name_logits)
    return out.scatter_reduce(-1, index, name_logits, reduce="amax", include_self=True)


class SupervisionStrategy(nn.Module):
    num_match_classes: int

    def classify(self, mask_embeds: torch.Tensor, text: TextEmbeddings, queries: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def training_logits(self, mask_embeds: torch.Tensor, batch: dict, queries: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def extra_losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {}

    def prepare_targets(self, targets: list[dict]) -> list[dict]:
        """Targets for the matcher and the class loss (labels in ``0..num_match_classes-1``)."""
        return targets
