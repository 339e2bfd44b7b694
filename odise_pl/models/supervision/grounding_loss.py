"""The caption grounding loss: masks are labelled by the nouns of the image's caption.

For mask embeddings ``z`` (B, Q, D) and the embeddings ``w`` (B, K, D) of K words
sampled from each image's caption, the score of image ``i`` with caption ``j`` is

    s[i, j, q, k] = tau * cos(z[i, q], w[j, k])
    g[i, j] = mean_k sum_q softmax_q(s[i, j, :, k]) * s[i, j, q, k]

(each word is grounded by the few masks that match it best; unmatched masks cost
nothing).  ``g`` is used as the logits of two cross-entropies with the matching
pairs as targets: over the captions of the batch for each image, and over the
images for each caption; the loss is their mean.

Word mask: ``word_mask`` (B, K) marks the real words; the mean over k runs over
them only.  A caption without any real word (see ``nouns.EMPTY_WORD``) is neither
a target (its image gets no caption term, it gets no image term) nor a negative
for the other images; its image is still a negative for the other captions.

Distributed training: the batch is gathered from every rank, with gradients
(:func:`odise_pl.models.supervision.collectives.all_gather_with_grad`), so the negatives are the
*global* batch.  Rank ``r`` computes the terms of its own B_r images (over all
captions) and of its own B_r captions (over all images), i.e. the rows of the
global loss whose targets are ``offset_r + arange(B_r)``.  Scaling: with N the
number of valid captions in the global batch and W ranks, rank ``r`` returns

    loss_r = W / N * 0.5 * (sum of its caption terms + sum of its image terms),

so that ``mean_r loss_r`` is the single-process loss ``L`` over the global batch.
The gather's backward sums what all ranks computed for each rank's rows, so the
gradient on rank ``r`` is ``d(sum_r loss_r)/d(its rows) = W * dL/d(its rows)`` and
DDP's gradient *averaging* over the W ranks yields exactly ``dL/dparams``, the
gradient of one process holding the whole batch.  (Parameters used outside the
gathered rows, such as ``tau``, get ``d loss_r / d tau`` per rank, averaged to
``dL / d tau``.)  Log the loss with ``sync_dist=True`` to see ``L``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.supervision.collectives import all_gather_with_grad, gather_sizes, is_distributed, rank


def image_caption_scores(
    mask_embeds: torch.Tensor, word_embeds: torch.Tensor, logit_scale: torch.Tensor | float, word_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Grounding score ``g`` of every image with every caption.

    Args:
        mask_embeds: (B_img, Q, D) L2-normalised mask embeddings.
        word_embeds: (B_cap, K, D) L2-normalised word embeddings.
        logit_scale: scalar ``tau`` (already exponentiated and clamped).
        word_mask: (B_cap, K) bool, real words; all real if ``None``.

    Returns:
        (B_img, B_cap) ``g``; 0 for a caption without real words.  Memory is
        B_img * B_cap * Q * K elements.
    """
    sim = logit_scale * torch.einsum("iqd,jkd->ijqk", mask_embeds, word_embeds)  # (Bi, Bc, Q, K)
    per_word = (sim.softmax(dim=2) * sim).sum(dim=2)  # (Bi, Bc, K)
    if word_mask is None:
        return per_word.mean(dim=-1)
    weight = word_mask.to(per_word.dtype)  # (Bc, K)
    return (per_word * weight).sum(dim=-1) / weight.sum(dim=-1).clamp(min=1)


def grounding_loss(
    mask_embeds: torch.Tensor,
    word_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    word_mask: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric image-caption grounding loss over the (global) batch.

    Args:
        mask_embeds: (B, Q, D) projected mask embeddings (normalised here).
        word_embeds: (B, K, D) projected embeddings of the K words of each image's caption.
        logit_scale: scalar ``tau`` (``exp`` of the learnable log-scale, clamped at 100).
        word_mask: (B, K) bool, ``True`` for real words; all real if ``None``.
        gather: gather the batch from every rank (a no-op outside distributed runs).

    Returns:
        Scalar loss.  In a distributed run this rank's share, scaled so that the mean
        over ranks is the loss over the global batch (see the module docstring).
    """
    if mask_embeds.dim() != 3 or word_embeds.dim() != 3:
        raise ValueError(
            f"expected mask_embeds (B,Q,D) and word_embeds (B,K,D), got {tuple(mask_embeds.shape)} and {tuple(word_embeds.shape)}"
        )
    batch, words, dim = word_embeds.shape
    if mask_embeds.shape[0] != batch or mask_embeds.shape[2] != dim:
        raise ValueError(
            f"mask_embeds {tuple(mask_embeds.shape)} and word_embeds {tuple(word_embeds.shape)} disagree on the batch size or the width"
        )
    if word_mask is None:
        word_mask = torch.ones(batch, words, dtype=torch.bool, device=word_embeds.device)
    elif word_mask.shape != (batch, words):
        raise ValueError(f"word_mask must be (B, K) = {(batch, words)}, got {tuple(word_mask.shape)}")
    word_mask = word_mask.bool()
    z = F.normalize(mask_embeds, dim=-1)
    w = F.normalize(word_embeds, dim=-1)

    if gather and is_distributed():
        sizes = gather_sizes(batch, z.device)
        num_queries = z.shape[1]
        # one collective for all three: (B, Q*D + K*D + K)
        packed = torch.cat([z.flatten(1), w.flatten(1), word_mask.to(z.dtype)], dim=1)
        every = all_gather_with_grad(packed, sizes)  # (G, ...)
        z_all = every[:, : num_queries * dim].reshape(-1, num_queries, dim)
        w_all = every[:, num_queries * dim : (num_queries + words) * dim].reshape(-1, words, dim)
        mask_all = every[:, (num_queries + words) * dim :] > 0.5
        offset, num_ranks = sum(sizes[: rank()]), len(sizes)
    else:
        z_all, w_all, mask_all, offset, num_ranks = z, w, word_mask, 0, 1

    valid_all = mask_all.any(dim=-1)  # (G,) captions with a real word
    valid = word_mask.any(dim=-1)  # (B,)
    targets = torch.arange(batch, device=z.device) + offset

    scores = image_caption_scores(z, w_all, logit_scale, mask_all)  # (B, G): my images, all captions
    if num_ranks == 1:
        by_caption = scores.t()  # (B, G): my captions, all images
    else:
        by_caption = image_caption_scores(z_all, w, logit_scale, word_mask).t()
    over_captions = scores.masked_fill(~valid_all[None, :], float("-inf"))
    loss_captions = F.cross_entropy(over_captions[valid], targets[valid], reduction="sum")
    loss_images = F.cross_entropy(by_caption[valid], targets[valid], reduction="sum")
    num_valid = valid_all.sum().clamp(min=1)
    return 0.5 * (loss_captions + loss_images) * num_ranks / num_valid


def reference_grounding_loss(
    mask_embeds: torch.Tensor,
    word_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    caption_valid: torch.Tensor,
    gather: bool = True,
) -> torch.Tensor:
    """The reference's grounding loss (ODISE ``MaskGroundingCriterion.get_loss``), term for term.

    ``g`` averages over **all** K words (an image without a phrase has K empty words, embedded like
    the others); with ``G`` the (gathered) batch and ``labels = offset + arange(B)``:

    * captions -> images: ``mean_b(valid_b * CE(g[:, b] over the G images, label_b))``, the mean over
      all B local captions;
    * images -> captions: ``CE(g[b, :] over the G captions, label_b, weight=valid_G)``, the weighted
      mean; invalid captions stay in the softmax as negatives. If no target is valid (a NaN), the
      unweighted CE instead.

    The loss is ``0.5 * (both)``, per rank as the reference (each rank's local mean; DDP averages the
    gradients). Differs from :func:`grounding_loss` in the word mean, the weights and that reduction.

    Args:
        mask_embeds: (B, Q, D), word_embeds: (B, K, D) (normalised here).
        logit_scale: scalar ``tau``.
        caption_valid: (B,) bool, the images whose caption gave at least one phrase.
        gather: gather images, words and validity from every rank (with gradients).
    """
    z = F.normalize(mask_embeds, dim=-1)
    w = F.normalize(word_embeds, dim=-1)
    batch, num_queries, dim = z.shape
    words = w.shape[1]
    valid = caption_valid.to(torch.bool).reshape(batch)
    if gather and is_distributed():
        sizes = gather_sizes(batch, z.device)
        packed = torch.cat([z.flatten(1), w.flatten(1), valid[:, None].to(z.dtype)], dim=1)
        every = all_gather_with_grad(packed, sizes)
        z_all = every[:, : num_queries * dim].reshape(-1, num_queries, dim)
        w_all = every[:, num_queries * dim : (num_queries + words) * dim].reshape(-1, words, dim)
        valid_all = every[:, -1] > 0.5
        offset = sum(sizes[: rank()])
    else:
        z_all, w_all, valid_all, offset = z, w, valid, 0
    labels = torch.arange(batch, device=z.device) + offset
    global_img_txt = image_caption_scores(z_all, w, logit_scale)  # (G images, B captions)
    img_global_txt = image_caption_scores(z, w_all, logit_scale)  # (B images, G captions)
    captions_to_images = (F.cross_entropy(global_img_txt.t(), labels, reduction="none") * valid).mean()
    images_to_captions = F.cross_entropy(img_global_txt, labels, weight=valid_all.to(img_global_txt.dtype))
    if not torch.isfinite(images_to_captions).all():  # every target invalid: 0 / 0
        images_to_captions = F.cross_entropy(img_global_txt, labels)
    return 0.5 * (captions_to_images + images_to_captions)


class GroundingLoss(nn.Module):
    """Module form of :func:`grounding_loss` (no parameters: ``tau`` comes from the mask head).

    Args:
        gather: gather the batch across ranks for the negatives (the reference does).

    Shapes:
        mask_embeds (B, Q, D), word_embeds (B, K, D), logit_scale scalar,
        word_mask (B, K) bool or ``None`` -> scalar.

    Example:
        >>> loss_fn = GroundingLoss()
        >>> z, w = torch.randn(4, 100, 256), torch.randn(4, 8, 256)
        >>> loss_fn(z, w, torch.tensor(14.3)).shape
        torch.Size([])
    """

    def __init__(self, *, gather: bool = True) -> None:
        super().__init__()
        self.gather = gather

    def forward(
        self, mask_embeds: torch.Tensor, word_embeds: torch.Tensor, logit_scale: torch.Tensor | float, word_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return grounding_loss(mask_embeds, word_embeds, logit_scale, word_mask, gather=self.gather)

    def extra_repr(self) -> str:
        return f"gather={self.gather}"
