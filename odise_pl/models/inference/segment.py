"""The one post-processing path: mask logits of a padded batch -> panoptic / semantic / instance outputs.

Evaluation (:meth:`OdiseModule.validation_step`), the TensorBoard pictures
(:class:`~odise_pl.callbacks.visualization.PanopticVisualizer`) and :class:`~odise_pl.engine.predictor.Predictor`
all go through :meth:`OdiseModule.segment <odise_pl.models.odise_module.OdiseModule.segment>`, which
calls :func:`postprocess_image` on each image: the mask logits are upsampled to the padded input,
cut to the image's valid area and brought to the requested output size, where the post-processing runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from odise_pl.models.inference.instance import instance_inference
from odise_pl.models.inference.panoptic import panoptic_inference
from odise_pl.models.inference.semantic import semantic_argmax, semantic_argmax_scores_resized

#: the post-processing outputs :func:`postprocess_image` can produce
TASKS = ("panoptic", "semantic", "instances")
#: ``model.inference.semantic_postprocess``: ``masks_first`` (ODISE: mask logits to the output size, then the
#: semantic map) or ``scores_when_semantic_only`` (FC-CLIP: when semantic is the only task, the class-score map
#: at the padded input size is cropped and resized instead; :func:`semantic_argmax_scores_resized`)
SEMANTIC_ORDERS = ("masks_first", "scores_when_semantic_only")


def masks_to_output(masks: torch.Tensor, image_size: Sequence[int], output_size: Sequence[int], padded: Sequence[int]) -> torch.Tensor:
    """Mask logits of one image at the decoder's resolution -> logits at ``output_size``.

    Bilinear to the padded input, crop the valid area, bilinear to the output size (the reference's
    upsampling + ``sem_seg_postprocess``).

    Args:
        masks: (Q, h, w) mask logits.
        image_size: (H_valid, W_valid), the image inside the padded input.
        output_size: (H_out, W_out), usually the original image size.
        padded: (H_pad, W_pad) of the input batch.

    Returns:
        (Q, H_out, W_out) float32 mask logits.

    Example:
        >>> m = masks_to_output(torch.zeros(2, 4, 4), (12, 8), (6, 4), (16, 16))
        >>> tuple(m.shape)
        (2, 6, 4)
    """
    m = F.interpolate(masks[None].float(), size=tuple(padded), mode="bilinear", align_corners=False)[0]
    m = m[:, : int(image_size[0]), : int(image_size[1])]
    return F.interpolate(m[None], size=tuple(int(s) for s in output_size), mode="bilinear", align_corners=False)[0]


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """``tasks`` as a tuple; a name not in :data:`TASKS` raises a ValueError naming the choices."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown post-processing task(s) {unknown}: choose from {list(TASKS)}")
    return tuple(tasks)


def postprocess_image(
    probs: torch.Tensor,
    masks: torch.Tensor,
    *,
    image_size: Sequence[int],
    output_size: Sequence[int],
    padded: Sequence[int],
    is_thing: torch.Tensor,
    tasks: Sequence[str],
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.8,
    instance_topk: int = 100,
    semantic_size: Sequence[int] | None = None,
    semantic_order: str = "masks_first",
) -> dict:
    """One image: masks to the output size, then the panoptic, semantic and instance outputs asked for.

    Args:
        probs: (Q, K+1) class probabilities (void last).
        masks: (Q, h, w) mask logits at the decoder's resolution.
        image_size: (H_valid, W_valid) inside the padded input.
        output_size: (H_out, W_out) of the outputs.
        padded: (H_pad, W_pad) of the input batch.
        is_thing: (K,) bool.
        tasks: a subset of :data:`TASKS`.
        object_mask_threshold, overlap_threshold: see :func:`panoptic_inference`.
        instance_topk: see :func:`instance_inference`.
        semantic_size: the size of the semantic map (default ``output_size``; a smaller one bounds
            the cost of a large vocabulary, see :class:`~odise_pl.engine.predictor.Predictor`).
        semantic_order: one of :data:`SEMANTIC_ORDERS`.

    Returns:
        ``panoptic``: ``(ids (H_out, W_out) int64, segments)``; ``semantic``: (H_s, W_s) int64;
        ``instances``: ``masks`` (N, H_out, W_out) bool, ``scores``, ``labels`` - the keys of ``tasks``.

    Example:
        >>> probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
        >>> masks = torch.full((2, 4, 4), -5.0)                 # query 0: left half, query 1: right half
        >>> masks[0, :, :2] = 5.0
        >>> masks[1, :, 2:] = 5.0
        >>> out = postprocess_image(probs, masks, image_size=(8, 8), output_size=(4, 4), padded=(8, 8),
        ...                         is_thing=torch.tensor([True, False]), tasks=("panoptic", "semantic"))
        >>> ids, segments = out["panoptic"]
        >>> ids.tolist()[0], [s["category"] for s in segments]
        ([1, 1, 2, 2], [0, 1])
        >>> out["semantic"].tolist()[0]
        [0, 0, 1, 1]
    """
    tasks = check_tasks(tasks)
    probs = probs.float()
    if tasks == ("semantic",) and semantic_order == "scores_when_semantic_only":
        size = output_size if semantic_size is None else semantic_size
        return {"semantic": semantic_argmax_scores_resized(probs, masks, image_size=image_size, output_size=size, padded=padded)}
    m = masks_to_output(masks, image_size, output_size, padded)
    result: dict = {}
    if "panoptic" in tasks:
        result["panoptic"] = panoptic_inference(
            probs, m, is_thing, object_mask_threshold=object_mask_threshold, overlap_threshold=overlap_threshold
        )
    if "semantic" in tasks:
        same = semantic_size is None or tuple(int(s) for s in semantic_size) == tuple(m.shape[-2:])
        ms = m if same else masks_to_output(masks, image_size, semantic_size, padded)
        result["semantic"] = semantic_argmax(probs, ms)
    if "instances" in tasks:
        result["instances"] = instance_inference(probs, m, is_thing, topk=instance_topk)
    return result


__all__ = ["SEMANTIC_ORDERS", "TASKS", "check_tasks", "masks_to_output", "postprocess_image"]
