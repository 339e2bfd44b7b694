"""Hungarian matching + Mask2Former losses (``transformers``' matcher and loss), weighted and DDP-aware.

Two ``model.speed`` switches remove the loss's waits for the device (host syncs):

* ``batched_matching``: every layer and image matched with one device-to-host copy
  (:func:`~odise_pl.models.mask_generator.matching.batched_hungarian`), the losses indexed with device
  indices, the number of masks (and its all-reduce) computed once per step instead of once per layer.
* ``no_host_syncs``: the crowd segments found with one copy of all images' ``iscrowd`` flags per step
  (instead of one boolean indexing per image), and no indexing at all when no segment is a crowd.
"""

from __future__ import annotations

import copy

import numpy as np
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
        batched_matching: ``model.speed.batched_matching``: every layer and image matched with one
            device-to-host copy (:mod:`~odise_pl.models.mask_generator.matching`).
        no_host_syncs: ``model.speed.no_host_syncs``: the crowd segments found with one copy per step.
    """

    def __init__(self, config: Mask2FormerConfig, num_classes: int, *, batched_matching: bool = False, no_host_syncs: bool = False) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        config.num_labels = num_classes
        self.weights = {"loss_cross_entropy": config.class_weight, "loss_mask": config.mask_weight, "loss_dice": config.dice_weight}
        self.loss = _Loss(config, weight_dict=self.weights)
        self.deep_supervision = config.use_auxiliary_loss
        self.batched_matching = batched_matching
        self.no_host_syncs = no_host_syncs

    def forward(self, pred_masks: list[torch.Tensor], class_logits: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
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
        masks, labels = self.without_crowd(targets, pred_masks[-1].dtype)
        if self.batched_matching:
            return self.weighted(self.batched_losses(pred_masks, class_logits, masks, labels))
        aux = None
        if self.deep_supervision:
            aux = [{"masks_queries_logits": m, "class_queries_logits": c} for m, c in zip(pred_masks[:-1], class_logits[:-1])]
        return self.weighted(self.loss(pred_masks[-1], class_logits[-1], masks, labels, auxiliary_predictions=aux))

    def weighted(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each term times its weight (``loss_dice_3`` takes the weight of ``loss_dice``)."""
        return {k: v * self.weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] for k, v in raw.items()}

    def without_crowd(self, targets: list[dict], dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image the non-crowd masks (N_i, H, W) in ``dtype`` and their labels (N_i,).

        Default: one boolean indexing per image (a host sync each). ``no_host_syncs``: the flags of all
        images copied to the host at once; images without crowd segments are not indexed.
        """
        if not self.no_host_syncs:
            return ([t["masks"][~t["iscrowd"]].to(dtype) for t in targets], [t["labels"][~t["iscrowd"]] for t in targets])
        flags = torch.cat([t["iscrowd"].reshape(-1).bool() for t in targets]).cpu().numpy() if targets else None
        masks, labels, start = [], [], 0
        for t in targets:
            crowd = flags[start : start + len(t["iscrowd"])]  # numpy, on the host
            start += len(crowd)
            if crowd.any():
                keep = torch.from_numpy(np.flatnonzero(~crowd)).to(t["masks"].device, non_blocking=True)
                masks.append(t["masks"].index_select(0, keep).to(dtype))
                labels.append(t["labels"].index_select(0, keep))
            else:
                masks.append(t["masks"].to(dtype))
                labels.append(t["labels"])
        return masks, labels

    def batched_losses(
        self, pred_masks: list[torch.Tensor], class_logits: list[torch.Tensor], masks: list[torch.Tensor], labels: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms of :meth:`forward` (same keys, same order) from one batched matching."""
        from odise_pl.models.mask_generator.matching import batched_hungarian

        layers = [len(pred_masks) - 1] + (list(range(len(pred_masks) - 1)) if self.deep_supervision else [])
        indices = batched_hungarian(self.loss.matcher, [pred_masks[i] for i in layers], [class_logits[i] for i in layers], masks, labels)
        num_masks = self.loss.get_num_masks(labels, device=labels[0].device)  # once, not once per layer
        raw: dict[str, torch.Tensor] = {}
        for position, (layer, idx) in enumerate(zip(layers, indices)):
            suffix = "" if position == 0 else f"_{layer}"
            terms = {
                **self.loss.loss_masks(pred_masks[layer], masks, idx, num_masks),
                **self.loss.loss_labels(class_logits[layer], labels, idx),
            }
            raw.update({k + suffix: v for k, v in terms.items()})
        return raw

    def matched_indices(
        self, pred_masks: torch.Tensor, class_logits: torch.Tensor, targets: list[dict]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hungarian assignment of one decoder output (used by strategies that need the matching)."""
        masks = [t["masks"][~t["iscrowd"]].to(pred_masks.dtype) for t in targets]
        labels = [t["labels"][~t["iscrowd"]] for t in targets]
        return self.loss.matcher(pred_masks, class_logits, masks, labels)
