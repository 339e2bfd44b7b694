"""TensorBoard pictures: image | ground truth | prediction, for validation and (every N steps) training."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from odise_pl.callbacks.drawing import colorize_panoptic, overlay


def segments_from_masks(masks: torch.Tensor, labels: torch.Tensor, is_thing: torch.Tensor | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Training targets (N binary masks + labels) -> an id map and its segments, for pictures.

    Args:
        masks: (N, H, W) bool.
        labels: (N,) class indices.
        is_thing: (N,) bool (default: all things).

    Returns:
        ``ids`` (H, W) int64 (segment ``n + 1`` where mask ``n`` is set; later masks win) and
        the segments ``{"id", "category", "isthing"}``.

    Example:
        >>> masks = torch.tensor([[[True, False]], [[False, True]]])
        >>> ids, segments = segments_from_masks(masks, torch.tensor([3, 5]))
        >>> ids.tolist(), [s["category"] for s in segments]
        ([[1, 2]], [3, 5])
    """
    ids = torch.zeros(masks.shape[-2:], dtype=torch.int64, device=masks.device)
    segments = []
    for n in range(masks.shape[0]):
        ids[masks[n].bool()] = n + 1
        thing = True if is_thing is None else bool(is_thing[n])
        segments.append({"id": n + 1, "category": int(labels[n]), "isthing": thing})
    return ids, segments


class PanopticVisualizer(L.Callback):
    """Logs side-by-side panels (image | ground truth | prediction) to TensorBoard.

    Validation: the first ``num_images`` images of the first batch, at each validation (``val/panoptic_<i>``).
    Training: the first ``num_images`` images of the batch of every ``every_n_steps``-th optimiser step
    (``train/panoptic_<i>`` at steps N, 2N, ...; the model put in eval mode for the prediction, at the images' valid size).
    The predictions go through :meth:`OdiseModule.segment`, the path evaluation and the Predictor use.

    Args:
        num_images: images per panel set.
        every_n_steps: training pictures every N steps (0: none); None: ``logging.vis_every_n_steps``
            of the module's config (0 when it has none).
    """

    def __init__(self, num_images: int = 4, *, every_n_steps: int | None = None) -> None:
        self.num_images = int(num_images)
        self.every_n_steps = every_n_steps
        self.last_train_step = -1  # the step of the last training pictures

    def training_interval(self, pl_module) -> int:
        """Steps between training pictures (0: none)."""
        if self.every_n_steps is not None:
            return max(0, int(self.every_n_steps))
        config = getattr(pl_module, "hparams", {}).get("config") or {}
        return max(0, int((config.get("logging") or {}).get("vis_every_n_steps", 0) or 0))

    @staticmethod
    def experiment(trainer):
        """The TensorBoard ``SummaryWriter`` of ``trainer`` (None on other ranks or without one)."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return None
        experiment = getattr(trainer.logger, "experiment", None)
        return experiment if hasattr(experiment, "add_image") else None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        experiment = self.experiment(trainer)
        if batch_idx != 0 or experiment is None:
            return
        n = self.num_images
        targets = batch["targets"][:n]
        orig = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        self.log_panels(
            experiment, "val", pl_module, batch, orig, trainer.global_step, [(t["gt_panoptic"], t["gt_segments"]) for t in targets]
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every, step = self.training_interval(pl_module), trainer.global_step
        # global_step counts optimiser steps done; with gradient accumulation several micro-batches
        # end at one step: only the first of them is drawn
        if every <= 0 or step == 0 or step % every != 0 or step == self.last_train_step:
            return
        self.last_train_step = step
        experiment = self.experiment(trainer)
        if experiment is None:
            return
        n = self.num_images
        sizes = [tuple(int(s) for s in size) for size in batch["image_sizes"][:n]]
        gts = []
        for t, (h, w) in zip(batch["targets"][:n], sizes):
            gts.append(segments_from_masks(t["masks"][:, :h, :w], t["labels"], t.get("is_thing")))
        was_training = pl_module.training
        pl_module.eval()
        try:
            self.log_panels(experiment, "train", pl_module, batch, sizes, trainer.global_step, gts)
        finally:
            pl_module.train(was_training)

    def log_panels(
        self,
        experiment,
        stage: str,
        pl_module,
        batch: dict,
        output_sizes: list[tuple[int, int]],
        step: int,
        ground_truth: list[tuple[torch.Tensor, list[dict]]],
    ) -> None:
        """Predict the first ``len(output_sizes)`` images of ``batch`` and log one panel per image."""
        n = len(output_sizes)
        images, sizes = batch["images"][:n], batch["image_sizes"][:n]
        captions = pl_module.batch_captions(batch)
        results = pl_module.segment(images, sizes, output_sizes, captions=captions[:n] if captions else None, tasks=("panoptic",))
        for i, (res, (gt_ids, gt_segs), size) in enumerate(zip(results, ground_truth, output_sizes)):
            h, w = (int(s) for s in sizes[i])
            img = F.interpolate(images[i, :, :h, :w].float()[None], size=size, mode="bilinear", align_corners=False)[0]
            img = img.clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
            ids, segs = res["panoptic"]
            panel = np.concatenate(
                [img, overlay(img, colorize_panoptic(gt_ids, gt_segs)), overlay(img, colorize_panoptic(ids, segs))], axis=1
            )
            experiment.add_image(f"{stage}/panoptic_{i}", panel, step, dataformats="HWC")
