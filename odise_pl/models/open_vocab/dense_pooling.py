"""FC-CLIP's out-of-vocabulary mask embeddings: the backbone's own CLIP map, pooled inside each mask.

``model.inference.clip_features: backbone``. No second CLIP pass: the ``clip`` backbone's
``clip_dense`` map (a ConvNeXt trunk's stride-32 output of the same forward, ``norm_pre(res5)``)
is average-pooled inside each predicted mask and sent through CLIP's own head, as fc-clip @ 2b0bbe2
does at inference (``fcclip.py:353-367``, ``clip.py:147-152``):

1. the final decoder layer's mask logits, resized bilinearly to the map's size (stride 32 of the
   padded input);
2. binarised ``> 0`` and averaged over the mask (``sum / (area + 1e-8)``: an empty mask pools zeros);
3. ``trunk.forward_head`` (the trunk's pooling of a 1x1 map, its norm) then ``visual.head`` (the
   CLIP projection): CLIP's image-embedding path with mask pooling in place of global pooling.

Masks and features share the padded grid, so nothing is cropped (``clip_mask_alignment`` does not apply).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.open_vocab.mask_classifier import clip_logits
from odise_pl.models.supervision.base import TextEmbeddings

_MAX_LOGIT_SCALE = 100.0


def mask_average_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average ``features`` (B,C,h,w) inside each mask ``mask_logits > 0`` (B,Q,h,w) -> (B,Q,C).

    FC-CLIP's ``MaskPooling``: the detached logits thresholded at 0, divided by ``area + 1e-8``
    (an empty mask pools to zeros).
    """
    mask = (mask_logits.detach() > 0).to(features.dtype)
    denorm = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, mask / denorm)


class DenseMaskClassifier(nn.Module):
    """Per-mask CLIP embeddings from the backbone's dense ConvNeXt map, and their class logits.

    Args:
        clip: the frozen CLIP whose trunk produced the map (the ``clip`` backbone's).
    """

    def __init__(self, clip) -> None:
        super().__init__()
        visual = clip.model.visual
        if not (hasattr(visual, "trunk") and hasattr(visual.trunk, "forward_head")) or "pool" in dict(visual.head.named_children()):
            raise NotImplementedError(
                "model.inference.clip_features: backbone pools a ConvNeXt CLIP's dense "
                "map through the trunk's own head (open_clip timm towers such as "
                "convnext_large_d_320); this CLIP has none. Use clip_features: image."
            )
        self.clip = clip

    def train(self, mode: bool = True) -> DenseMaskClassifier:
        super().train(mode)
        self.clip.train(False)  # frozen
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's own temperature, exp(logit_scale) clamped to <= 100."""
        return self.clip.model.logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)

    @staticmethod
    def masks_for_pooling(dense: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """(B,Q,h,w) mask logits -> (B,Q,H/32,W/32): bilinear to the dense map's size."""
        return F.interpolate(mask_logits.float(), size=dense.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, dense: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed each mask.

        Args:
            dense: (B,C,H/32,W/32) the backbone's ``clip_dense`` map.
            mask_logits: (B,Q,h,w) the final layer's mask logits on the same (padded) grid.

        Returns:
            (B,Q,E) mask embeddings in CLIP's joint space (not normalised), and (B,Q) bool: the masks
            with at least one pixel ``> 0`` at the map's resolution.
        """
        masks = self.masks_for_pooling(dense, mask_logits)  # (B, Q, H/32, W/32)
        pooled = mask_average_pool(dense.float(), masks)  # (B, Q, C)
        b, q, c = pooled.shape
        visual = self.clip.model.visual
        emb = visual.trunk.forward_head(pooled.reshape(b * q, c, 1, 1).to(dense.dtype))  # norm of a 1x1 map
        valid = (masks > 0).flatten(2).any(-1)
        return visual.head(emb).view(b, q, -1), valid

    def logits(self, mask_embeds: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """(B,Q,E) -> (B,Q,K): CLIP's scale x cosine, the maximum over each class's names."""
        return clip_logits(mask_embeds, text, self.logit_scale)


__all__ = ["DenseMaskClassifier", "mask_average_pool"]
