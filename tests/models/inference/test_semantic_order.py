"""FC-CLIP's post-processing order for semantic-only sets (FCCLIP_REFERENCE.md 1.7, item 23)."""

import torch
import torch.nn.functional as F

from odise_pl.models.inference.segment import postprocess_image
from odise_pl.models.inference.semantic import semantic_argmax_scores_resized


def _reference_order(probs, masks, image_size, output_size, padded):
    """fcclip.py:405-433 written out: masks to the padded size, the dense (K,H,W) map, crop, resize, argmax."""
    m = F.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)[0]
    sem = torch.einsum("qc,qhw->chw", probs[:, :-1], m.sigmoid())
    sem = sem[:, : image_size[0], : image_size[1]]
    return F.interpolate(sem[None], size=output_size, mode="bilinear", align_corners=False)[0].argmax(0)


def test_chunked_scores_order_equals_the_dense_formula_and_differs_from_masks_first():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(7, 41, generator=g).softmax(-1)
    masks = torch.randn(7, 10, 14, generator=g) * 4
    args = dict(image_size=(37, 50), output_size=(23, 31), padded=(40, 56))
    got = semantic_argmax_scores_resized(probs, masks, class_chunk=8, **args)
    assert torch.equal(got, _reference_order(probs, masks, (37, 50), (23, 31), (40, 56)))
    base = dict(is_thing=torch.zeros(40, dtype=torch.bool), tasks=("semantic",), **args)
    fcclip = postprocess_image(probs, masks, semantic_order="scores_when_semantic_only", **base)["semantic"]
    odise = postprocess_image(probs, masks, **base)["semantic"]
    assert torch.equal(fcclip, got)
    assert (fcclip != odise).any()  # the order matters (a handful of boundary pixels)


def test_with_panoptic_on_the_order_is_masks_first_in_both_recipes():
    g = torch.Generator().manual_seed(1)
    probs, masks = torch.rand(5, 9, generator=g).softmax(-1), torch.randn(5, 8, 8, generator=g)
    base = dict(
        image_size=(30, 32), output_size=(15, 16), padded=(32, 32), is_thing=torch.ones(8, dtype=torch.bool), tasks=("panoptic", "semantic")
    )
    a = postprocess_image(probs, masks, semantic_order="scores_when_semantic_only", **base)
    b = postprocess_image(probs, masks, **base)
    assert torch.equal(a["semantic"], b["semantic"])
