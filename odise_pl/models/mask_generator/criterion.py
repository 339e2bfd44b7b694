"""Hungarian matching + Mask2Former losses (``transformers``' matcher and loss), weighted and DDP-aware."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss


class _Loss(Mask2FormerLoss):
    def get_num_masks(self, class_labels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Average number of target masks per rank, all-reduced over the process group (as Mask2Former)."""
        num = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num)
            world = dist.get_world_size()
        return torch.clamp(num / world, min=1.0)


class SetCriterion(torch.nn.Module):
    """Matches predictions to ground-truth masks and returns the weighted Mask2Former losses.

    Args:
        config: the mask generator's ``Mask2FormerConfig`` (loss weights, point sampling).
        num_classes: classes the matcher sees (K for category labels, 1 = "object" for captions).
    """

    def __init__(self, config: Mask2FormerConfig, num_classes: int) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        config.num_labels = num_classes
        self.weights = {"loss_cross_entropy": config.class_weight, "loss_mask": config.mask_weight,
                        "loss_dice": config.dice_weight}
        self.loss = _Loss(config, weight_dict=self.weights)
        self.deep_supervision = config.use_auxiliary_loss

    def forward(self, pred_masks: list[torch.Tensor], class_logits: list[torch.Tensor],
                targets: list[dict]) -> dict[str, torch.Tensor]:
        """Weighted losses over all supervised decoder outputs.

        Args:
            pred_masks: L x (B, Q, h, w) mask logits, last layer last.
            class_logits: L x (B, Q, K+1) logits used for matching and the class loss.
            targets: per image ``masks`` (N,H,W) bool, ``labels`` (N,) long, ``iscrowd`` (N,) bool.
                Crowd segments are left out (as Mask2Former does).

        Returns:
            ``{"loss_cross_entropy": ..., "loss_mask": ..., "loss_dice": ..., "loss_cross_entropy_0": ...}``,
            already multiplied by their weights.
        """
        masks, labels = [], []
        for t in targets:
            keep = ~t["iscrowd"]
            masks.append(t["masks"][keep].to(pred_masks[-1].dtype))
            labels.append(t["labels"][keep])
        aux = None
        if self.deep_supervision:
            aux = [{"masks_queries_logits": m, "class_queries_logits": c}
                   for m, c in zip(pred_masks[:-1], class_logits[:-1])]
        raw = self.loss(pred_masks[-1], class_logits[-1], masks, labels, auxiliary_predictions=aux)
        return {k: v * self.weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] for k, v in raw.items()}

    def matched_indices(self, pred_masks: torch.Tensor, class_logits: torch.Tensor,
                        targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hungarian assignment of one decoder output (used by strategies that need the matching)."""
        masks = [t["masks"][~t["iscrowd"]].to(pred_masks.dtype) for t in targets]
        labels = [t["labels"][~t["iscrowd"]] for t in targets]
        return self.loss.matcher(pred_masks, class_logits, masks, labels)
