"""Image <-> caption retrieval accuracy of a caption-grounding model (the COCO protocol).

A training-free check that grounding was learned: every validation image is scored against
every validation caption with the grounding score of
:class:`~odise_pl.models.supervision.caption_grounding.CaptionGroundingSupervision`, and the
recall@k of both directions is reported beside its chance level.
``odise-pl retrieval`` (:mod:`odise_pl.commands.retrieval`) runs it on a config's validation split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from odise_pl.errors import ConfigError, DatasetError
from odise_pl.models.supervision.caption_grounding import CaptionGroundingSupervision
from odise_pl.models.supervision.grounding_loss import image_caption_scores
from odise_pl.models.supervision.nouns import EMPTY_WORD, valid_word_mask


def nonblank_captions(captions) -> list[str]:
    """An image's captions (a list, one string or None) without blank ones, stripped.

    Example:
        >>> nonblank_captions(["  A dog. ", "", "   ", "A cat."]), nonblank_captions("A cow."), nonblank_captions(None)
        (['A dog.', 'A cat.'], ['A cow.'], [])
    """
    if isinstance(captions, str):
        captions = [captions]
    return [str(c).strip() for c in captions or [] if c and str(c).strip()]


def retrieval_recalls(scores: torch.Tensor, owner: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k both ways, and its chance level, from a score matrix.

    Args:
        scores: (N, M) score of image i with caption j.
        owner: (M,) long, the image of each caption.
        ks: the recall levels.

    Returns:
        In percent: ``i2t_r{k}`` (one of an image's own captions is among its k best captions,
        over the images with a caption), ``t2i_r{k}`` (a caption's image is among its k best
        images), ``i2t_chance_r{k}`` (mean over images of the probability that k random captions
        include one of its own), ``t2i_chance_r{k}`` (k / N); ``num_images`` (with a caption) and
        ``num_captions`` M; with k = 1 also ``i2t_top1`` / ``t2i_top1`` / ``chance``.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.7, 0.3]])   # 2 images, 3 captions
        >>> r = retrieval_recalls(scores, torch.tensor([0, 1, 1]), ks=(1,))
        >>> round(r["i2t_r1"], 1), round(r["t2i_r1"], 1), round(r["t2i_chance_r1"], 1)  # caption 2 -> image 0
        (100.0, 66.7, 50.0)
    """
    n, m = scores.shape
    per_image = torch.bincount(owner, minlength=n)  # captions of each image
    has_caption = per_image > 0
    own = owner[None, :] == torch.arange(n, device=owner.device)[:, None]  # (N, M)
    result: dict[str, float] = {"num_images": float(has_caption.sum()), "num_captions": float(m)}
    for k in ks:
        k_img, k_cap = min(k, n), min(k, m)
        best_caps = scores.topk(k_cap, dim=1).indices  # (N, k)
        i2t = own.gather(1, best_caps).any(dim=1)[has_caption].float().mean().item()
        best_imgs = scores.topk(k_img, dim=0).indices  # (k, M)
        t2i = (best_imgs == owner[None, :]).any(dim=0).float().mean().item()
        # chance: P(k captions drawn without replacement miss all c own ones) = C(M-c, k) / C(M, k)
        c = per_image[has_caption].double()
        miss = torch.ones_like(c)
        for i in range(k_cap):
            miss = miss * ((m - c - i).clamp(min=0) / (m - i))
        result.update(
            {
                f"i2t_r{k}": 100.0 * i2t,
                f"t2i_r{k}": 100.0 * t2i,
                f"i2t_chance_r{k}": 100.0 * float((1 - miss).mean()),
                f"t2i_chance_r{k}": 100.0 * k_img / float(has_caption.sum()),
            }
        )
    if 1 in ks:
        result.update({"i2t_top1": result["i2t_r1"], "t2i_top1": result["t2i_r1"], "chance": result["t2i_chance_r1"]})
    return result


@torch.no_grad()
def retrieval_accuracy(
    model, dataloader: Iterable[dict], *, max_batches: int | None = None, ks: Sequence[int] = (1, 5), block_elements: int = 1 << 24
) -> dict[str, float]:
    """Image <-> caption retrieval with the grounding score ``g`` (the COCO protocol).

    Every caption of every image takes part; a caption's words are *all* its noun
    phrases (deterministic, unlike training's 8 random draws).  ``g(image i, caption j)``
    is :func:`~odise_pl.models.supervision.grounding_loss.image_caption_scores` of the
    final decoder layer's mask embeddings with the projected words.  Captions without a
    noun phrase are left out.  Single process.

    Args:
        model: an :class:`~odise_pl.models.odise_module.OdiseModule` whose ``supervision`` is a
            :class:`~odise_pl.models.supervision.caption_grounding.CaptionGroundingSupervision`.
        dataloader: evaluation batches with ``captions`` (set ``data.val_captions_json``).
        max_batches: stop after this many batches (default: all).
        ks: the recall levels.
        block_elements: memory bound of one block of the score matrix (elements).

    Returns:
        See :func:`retrieval_recalls`.
    """
    sup = model.supervision
    if not isinstance(sup, CaptionGroundingSupervision):
        raise ConfigError(f"retrieval_accuracy needs the caption_grounding supervision, the model has {type(sup).__name__}.")
    was_training = model.training
    model.eval()
    device = next(p for p in model.parameters()).device
    embeds, captions, owner, num_images = [], [], [], 0
    try:
        for b, batch in enumerate(dataloader):
            if max_batches is not None and b >= max_batches:
                break
            if batch.get("captions") is None:
                raise DatasetError(
                    "retrieval_accuracy needs captions in the evaluation batches: set "
                    "data.val_captions_json (e.g. annotations/captions_val2017.json)."
                )
            out = model(batch["images"].to(device), None)
            for caps in batch["captions"]:
                kept = nonblank_captions(caps)
                captions += kept
                owner += [num_images] * len(kept)
                num_images += 1
            embeds.append(F.normalize(out["mask_embeds"][-1].float(), dim=-1))
        if not embeds:
            raise DatasetError("retrieval_accuracy got no evaluation batch.")
        z = torch.cat(embeds)  # (N, Q, D)
        nouns = sup.extractor.extract_batch(captions) if captions else []
        keep = [j for j, n in enumerate(nouns) if n]
        if not keep:
            raise DatasetError("no validation caption has a noun phrase; retrieval cannot be measured.")
        nouns = [nouns[j] for j in keep]
        owner_t = torch.tensor([owner[j] for j in keep], device=device)
        longest = max(len(n) for n in nouns)
        words = [list(n) + [EMPTY_WORD] * (longest - len(n)) for n in nouns]
        mask = valid_word_mask(words).to(device)
        w = F.normalize(sup.word_embeddings(words, device).float(), dim=-1)  # (M, K, D)
        scale = sup.scale().float()
        n, q = z.shape[:2]
        rows = max(1, block_elements // max(1, len(words) * q * longest))
        scores = torch.cat([image_caption_scores(z[i : i + rows], w, scale, mask) for i in range(0, n, rows)])
    finally:
        model.train(was_training)
    return retrieval_recalls(scores, owner_t, ks)


__all__ = ["nonblank_captions", "retrieval_accuracy", "retrieval_recalls"]
