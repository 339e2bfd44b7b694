"""TensorBoard pictures: image | ground truth | prediction for the first validation images."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from odise_pl.visualization import colorize_panoptic, overlay


class PanopticVisualizer(L.Callback):
    """Logs ``num_images`` side-by-side panels of the first validation batch at each validation."""

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        images = batch["images"][: self.num_images]
        captions = pl_module._captions(batch) if hasattr(pl_module, "_captions") else None
        with torch.no_grad():  # captions: read only by diffusion_unet with caption_mode=caption
            out = pl_module(images, captions[: self.num_images] if captions else None)
            probs, masks = pl_module.predict_probs(images, out)
        padded = tuple(images.shape[-2:])
        for i, target in enumerate(batch["targets"][: self.num_images]):
            size = tuple(int(s) for s in batch["image_sizes"][i])
            orig = tuple(target["orig_size"])
            res = pl_module.postprocess(probs[i], masks[i], size, orig, padded)
            if "panoptic" not in res:
                continue
            ids, segs = res["panoptic"]
            img = images[i, :, : size[0], : size[1]].float()[None]
            img = torch.nn.functional.interpolate(img, size=orig, mode="bilinear", align_corners=False)[0]
            img = img.clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
            gt = colorize_panoptic(target["gt_panoptic"], target["gt_segments"])
            pred = colorize_panoptic(ids, segs)
            panel = np.concatenate([img, overlay(img, gt), overlay(img, pred)], axis=1)
            experiment.add_image(f"val/panoptic_{i}", panel, trainer.global_step, dataformats="HWC")
