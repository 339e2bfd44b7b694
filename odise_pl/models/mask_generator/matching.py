"""Hungarian matching of every decoder layer and image with one device-to-host copy (``model.speed.batched_matching``).

``transformers``' ``Mask2FormerHungarianMatcher`` copies each (Q, N_i) cost matrix to the host on its own
(``linear_sum_assignment(cost.cpu())``): B x L waits for the device per training step (2 images x 10
supervised outputs = 20 at the reference's settings), and the loss then indexes device tensors with the
host index tensors it returns (one more host-to-device copy per layer). :func:`batched_hungarian` computes
the same cost matrices on the device (the same operations, image by image, layer by layer, so the same
values), concatenates them, copies them to the host **once**, solves every assignment with scipy and
sends all the indices back in one (pinned, non-blocking) copy.

With the same random state, the indices equal those of calling the matcher layer by layer in the same
order (``tests/models/mask_generator/test_batched_matching.py``). Inside the loss the point samples are drawn in another
order (all the matching points first, then the loss points), so a training step differs from the
default path in its random draws, not in its distribution.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerHungarianMatcher,
    pair_wise_dice_loss,
    pair_wise_sigmoid_cross_entropy_loss,
    sample_point,
)

Indices = list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def matching_cost(
    matcher: Mask2FormerHungarianMatcher,
    pred_masks: torch.Tensor,
    class_logits: torch.Tensor,
    target_masks: torch.Tensor,
    target_labels: torch.Tensor,
) -> torch.Tensor:
    """Cost matrix (Q, N) of one image, as ``transformers``' matcher computes it (on the device).

    Args:
        pred_masks: (Q, h, w) mask logits; class_logits: (Q, K+1); target_masks: (N, H, W); target_labels: (N,).
    """
    cost_class = -class_logits.softmax(-1)[:, target_labels]  # (Q, N)
    target = target_masks.to(pred_masks)[:, None]  # (N, 1, H, W)
    pred = pred_masks[:, None]  # (Q, 1, h, w)
    points = torch.rand(1, matcher.num_points, 2, device=pred.device)  # the same draw as transformers
    target = sample_point(target, points.repeat(target.shape[0], 1, 1), align_corners=False).squeeze(1)
    pred = sample_point(pred, points.repeat(pred.shape[0], 1, 1), align_corners=False).squeeze(1)
    cost = (
        matcher.cost_mask * pair_wise_sigmoid_cross_entropy_loss(pred, target)
        + matcher.cost_class * cost_class
        + matcher.cost_dice * pair_wise_dice_loss(pred, target)
    )
    big = torch.finfo(cost.dtype).max
    return torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)


@torch.no_grad()
def batched_hungarian(
    matcher: Mask2FormerHungarianMatcher,
    pred_masks: list[torch.Tensor],
    class_logits: list[torch.Tensor],
    target_masks: list[torch.Tensor],
    target_labels: list[torch.Tensor],
) -> list[Indices]:
    """Assignments of every layer and image: one device-to-host copy, one host-to-device copy.

    Args:
        matcher: supplies the cost weights and the number of sampled points.
        pred_masks: L x (B, Q, h, w) mask logits; class_logits: L x (B, Q, K+1).
        target_masks: B x (N_i, H, W); target_labels: B x (N_i,).

    Returns:
        L x B x ``(query indices, target indices)``, int64 on the predictions' device (as many as
        ``min(Q, N_i)``, queries in increasing order, as scipy returns them).
    """
    device = pred_masks[0].device
    costs = [
        matching_cost(matcher, masks[i], logits[i], target_masks[i], target_labels[i])
        for masks, logits in zip(pred_masks, class_logits)
        for i in range(len(target_masks))
    ]
    flat = torch.cat([c.reshape(-1) for c in costs]).cpu().numpy()  # the one device-to-host copy
    solved, offset = [], 0
    for cost in costs:
        size = cost.numel()
        rows, cols = linear_sum_assignment(flat[offset : offset + size].reshape(cost.shape))
        solved.append((rows, cols))
        offset += size
    packed = torch.from_numpy(np.concatenate([np.concatenate(pair) for pair in solved]).astype(np.int64))
    if device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(device, non_blocking=True)  # the one host-to-device copy
    out, offset, batch = [], 0, len(target_masks)
    for layer in range(len(pred_masks)):
        per_image = []
        for rows, _ in solved[layer * batch : (layer + 1) * batch]:
            n = len(rows)
            per_image.append((packed[offset : offset + n], packed[offset + n : offset + 2 * n]))
            offset += 2 * n
        out.append(per_image)
    return out


__all__ = ["batched_hungarian", "matching_cost", "Indices"]
