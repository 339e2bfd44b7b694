"""The LightningModule: backbone -> mask generator -> supervision -> inference -> metrics.

It builds nothing from config itself (see :mod:`odise_pl.models.builder`); it
only composes the parts it is given, trains them, and evaluates them.
"""

from __future__ import annotations

import inspect
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.config.schema import InferenceConfig, OptimConfig
from odise_pl.metrics.mask_ap import mask_ap_metric, panoptic_to_instances, summarize_mask_ap
from odise_pl.metrics.panoptic_quality import PanopticQuality
from odise_pl.metrics.semantic_iou import AVERAGES, SemanticIoU
from odise_pl.models.frozen import is_frozen, keep_frozen_in_eval, pretrained_frozen_prefixes
from odise_pl.models.inference.instance import instance_inference
from odise_pl.models.inference.panoptic import panoptic_inference
from odise_pl.models.inference.semantic import semantic_inference
from odise_pl.models.mask_generator.criterion import SetCriterion
from odise_pl.models.optim import build_optimizer, build_scheduler
from odise_pl.models.supervision.base import SupervisionStrategy, TextEmbeddings


class OdiseModule(L.LightningModule):
    """ODISE as a LightningModule.

    Args:
        backbone: feature extractor following the backbone contract.
        mask_generator: Mask2Former mask generator.
        supervision: the supervision strategy (classification + its losses).
        criterion: matching + mask losses.
        eval_text: text embeddings of the evaluation vocabulary.
        eval_is_thing: (K_eval,) bool.
        inference: post-processing settings.
        optim: optimiser settings; ``max_steps`` sets the step schedule.
        open_vocab: optional CLIP mask classifier + ensemble
            (``forward(images, mask_logits, logits, image_sizes=...) -> probs``, see
            :class:`~odise_pl.models.open_vocab.inference_head.OpenVocabHead`).
        ignore_index: label ignored by the semantic metric.
        config: the resolved experiment config (saved as hyper-parameters).
        text_bank: the :class:`~odise_pl.models.open_vocab.text_bank.TextEmbeddingBank` of the trained
            classifier (the shared CLIP + the supervision's templates); :meth:`set_vocabulary` needs it.
    """

    #: ``model.speed.fused_optimizer`` (set by :func:`~odise_pl.models.speed.apply_speed_options`)
    fused_optimizer: bool = False

    def __init__(self, *, backbone: nn.Module, mask_generator: nn.Module, supervision: SupervisionStrategy,
                 criterion: SetCriterion, eval_text: TextEmbeddings, eval_is_thing: torch.Tensor,
                 inference: InferenceConfig, optim: OptimConfig, max_steps: int,
                 open_vocab: nn.Module | None = None, ignore_index: int = 255, config: dict | None = None,
                 text_bank=None) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config or {}})
        self.backbone = backbone
        self.mask_generator = mask_generator
        self.supervision = supervision
        self.criterion = criterion
        self.open_vocab = open_vocab
        self.inference_cfg = inference
        self.optim_cfg = optim
        self.max_steps = max_steps
        self.ignore_index = ignore_index
        self.text_bank = text_bank  # a plain object (not a module): nothing of it goes into checkpoints
        self.set_eval_vocabulary(eval_text, eval_is_thing)

    # ----------------------------------------------------------------------------------- vocabulary
    def set_eval_vocabulary(self, text: TextEmbeddings, is_thing: torch.Tensor) -> None:
        """Swap the test-time vocabulary (no retraining): new metrics sized for it."""
        device = self.device if hasattr(self, "_device") else None
        self.eval_text = text if device is None else text.to(device)
        self.register_buffer("eval_is_thing", is_thing.to(torch.bool).clone(), persistent=False)
        k = text.num_classes
        self.val_pq = PanopticQuality(is_thing=is_thing.tolist())
        average = getattr(self.inference_cfg, "miou_average", "either_present")
        self.val_sem = SemanticIoU(num_classes=k, ignore_index=self.ignore_index, average=average)
        self.test_pq = PanopticQuality(is_thing=is_thing.tolist())
        self.test_sem = SemanticIoU(num_classes=k, ignore_index=self.ignore_index, average=average)
        # mask AP (COCO instance segmentation) only when the instance post-processing is on
        instances = bool(getattr(self.inference_cfg, "instance_on", False))
        self.val_ap = mask_ap_metric() if instances else None
        self.test_ap = mask_ap_metric() if instances else None

    def set_vocabulary(self, names: list[list[str]], is_thing: list[bool]) -> None:
        """Use a new test vocabulary: one list of names per class (display name first) + thing flags.

        Re-embeds it with the text bank (the supervision's templates for the trained classifier,
        the CLIP prompt templates in the open-vocabulary head, which also gets the new seen split).
        """
        groups = [[n] if isinstance(n, str) else list(n) for n in names]
        if len(is_thing) != len(groups):
            raise ValueError(f"{len(groups)} classes but {len(is_thing)} thing flags")
        if self.text_bank is None:
            raise RuntimeError("this OdiseModule was built without a text bank: build it with "
                               "odise_pl.models.builder.build_model to change vocabularies")
        text = self.text_bank(groups)
        self.set_eval_vocabulary(text, torch.tensor([bool(t) for t in is_thing], device=self.device))
        if self.open_vocab is not None and hasattr(self.open_vocab, "set_vocabulary"):
            self.open_vocab.set_vocabulary(groups)

    # -------------------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, captions: list[str] | None = None) -> dict:
        """images (B,3,H,W) in [0,255] -> mask generator outputs (see Mask2FormerMaskGenerator)."""
        feats = self.backbone(images.float(), captions)
        return self.mask_generator(feats)

    def train(self, mode: bool = True) -> "OdiseModule":
        super().train(mode)
        keep_frozen_in_eval(self)
        return self

    @staticmethod
    def _captions(batch: dict) -> list[str] | None:
        caps = batch.get("captions")
        if not caps:
            return None
        return [c[0] if isinstance(c, (list, tuple)) and c else (c if isinstance(c, str) else "") for c in caps]

    def _query_kwargs(self, queries: torch.Tensor) -> dict:
        """``{"queries": ...}`` for strategies whose methods take the decoder's queries (older ones do not)."""
        if not hasattr(self, "_takes_queries"):
            params = inspect.signature(self.supervision.classify).parameters
            self._takes_queries = "queries" in params
        return {"queries": queries} if self._takes_queries else {}

    # ------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch["images"], self._captions(batch))
        batch = {**batch, "targets": self.supervision.prepare_targets(batch["targets"])}
        logits = [self.supervision.training_logits(e, batch, **self._query_kwargs(q))
                  for e, q in zip(out["mask_embeds"], out["queries"])]
        losses = self.criterion(out["pred_masks"], logits, batch["targets"])
        losses.update(self.supervision.extra_losses(out, batch))
        loss = torch.stack(list(losses.values())).sum()
        self.last_loss_terms = {k: v.detach() for k, v in losses.items()}  # named if the loss is not finite
        bs = batch["images"].shape[0]
        final = {k: v for k, v in losses.items() if not k[-1].isdigit()}
        self.log_dict({f"train/{k}": v for k, v in final.items()}, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    # ----------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor, out: dict,
                      image_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities (B,Q,K+1) and mask logits (B,Q,h,w) of the last decoder layer."""
        masks, embeds = out["pred_masks"][-1], out["mask_embeds"][-1]
        logits = self.supervision.classify(embeds, self.eval_text.to(embeds.device),
                                           **self._query_kwargs(out["queries"][-1]))
        if self.open_vocab is not None:
            probs = self.open_vocab(images, masks, logits, image_sizes=image_sizes)
        else:
            probs = logits.float().softmax(-1)
        return probs, masks

    @staticmethod
    def masks_to_output(masks: torch.Tensor, image_size: tuple[int, int], orig_size: tuple[int, int],
                        padded: tuple[int, int]) -> torch.Tensor:
        """(Q,h,w) mask logits -> (Q,*orig_size): bilinear to the padded input, crop the valid area, bilinear
        to the output size (the reference's upsampling + ``sem_seg_postprocess``)."""
        m = F.interpolate(masks[None].float(), size=padded, mode="bilinear", align_corners=False)[0]
        m = m[:, : image_size[0], : image_size[1]]
        return F.interpolate(m[None], size=orig_size, mode="bilinear", align_corners=False)[0]

    def postprocess(self, probs: torch.Tensor, masks: torch.Tensor, image_size: tuple[int, int],
                    orig_size: tuple[int, int], padded: tuple[int, int]) -> dict:
        """One image: masks to the original size, then panoptic and semantic outputs."""
        m = self.masks_to_output(masks, image_size, orig_size, padded)
        result: dict = {}
        cfg = self.inference_cfg
        if cfg.panoptic_on:
            result["panoptic"] = panoptic_inference(
                probs, m, self.eval_is_thing, object_mask_threshold=cfg.object_mask_threshold,
                overlap_threshold=cfg.overlap_threshold)
        if cfg.semantic_on:
            result["semantic"] = semantic_inference(probs, m).argmax(0)
        if cfg.instance_on:
            result["instances"] = instance_inference(probs, m, self.eval_is_thing, topk=cfg.instance_topk)
        return result

    def _eval_step(self, batch: dict, pq, sem, ap=None) -> None:
        images = batch["images"]
        out = self(images, self._captions(batch))  # read only by diffusion_unet with caption_mode=caption
        probs, masks = self.predict_probs(images, out, batch.get("image_sizes"))
        padded = tuple(images.shape[-2:])
        for i, target in enumerate(batch["targets"]):
            size = tuple(int(s) for s in batch["image_sizes"][i])
            res = self.postprocess(probs[i], masks[i], size, tuple(target["orig_size"]), padded)
            if "panoptic" in res and "gt_panoptic" in target:  # semantic-only sets have no panoptic GT
                ids, segs = res["panoptic"]
                pq.update(ids, segs, target["gt_panoptic"].to(ids.device), target["gt_segments"])
            if "semantic" in res:
                sem.update(res["semantic"], target["gt_semantic"].to(res["semantic"].device))
            if "instances" in res and ap is not None and "gt_panoptic" in target:
                inst = res["instances"]
                gt = panoptic_to_instances(target["gt_panoptic"].to(inst["masks"].device),
                                           target["gt_segments"], self.eval_is_thing)
                ap.update([{k: inst[k] for k in ("masks", "scores", "labels")}], [gt])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_pq, self.val_sem, self.val_ap)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_pq, self.test_sem, self.test_ap)

    def eval_metrics(self, stage: str, pq, sem, ap=None) -> dict:
        """The epoch's scores as ``{stage/name: value}`` (percent), then the metric states are reset.

        ``mIoU`` follows ``model.inference.miou_average``; ``mIoU_gt_present`` and
        ``mIoU_either_present`` name both conventions explicitly (same confusion matrix).
        ``mask_AP*`` appear when ``model.inference.instance_on`` is set.
        """
        metrics = {}
        if self.inference_cfg.panoptic_on:
            # a semantic-only set never updates pq; compute is still a collective
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
                scores = pq.compute()  # under DDP every rank computes, then decides alike
            if int(scores["n"]) > 0:  # n = 0: no panoptic ground truth (a semantic-only set): no PQ
                metrics.update({f"{stage}/{k}": v for k, v in scores.items() if k[:2] in ("PQ", "SQ", "RQ")})
        if self.inference_cfg.semantic_on:
            names = ("mIoU", "pACC", "fwIoU", *(f"mIoU_{average}" for average in AVERAGES))
            metrics.update({f"{stage}/{k}": v for k, v in sem.compute().items() if k in names})
        if ap is not None:
            metrics.update({f"{stage}/{k}": v for k, v in summarize_mask_ap(ap.compute()).items()})
            ap.reset()
        pq.reset()
        sem.reset()
        return metrics

    def _log_eval(self, stage: str, pq, sem, ap=None) -> None:
        metrics = self.eval_metrics(stage, pq, sem, ap)
        self.log_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in metrics.items()},
                      sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_pq, self.val_sem, self.val_ap)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_pq, self.test_sem, self.test_ap)

    # ------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        optimizer = build_optimizer(self.trainer.model if self._trainer is not None else self, self.optim_cfg,
                                    fused=self.fused_optimizer)
        scheduler = build_scheduler(optimizer, self.optim_cfg, self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Pretrained frozen weights are re-loaded from their source, not stored."""
        drop = tuple(pretrained_frozen_prefixes(self))
        if drop:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(drop)}

    #: buffers computed when the model is built (TextEncoder(""), the no-object weight); a weights file
    #: without them (``odise-pl convert-reference`` writes none) gets the model's own
    RECOMPUTED_BUFFERS = ("backbone.empty_text", "criterion.loss.empty_weight")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        own_buffers = dict(self.named_buffers())
        for key in self.RECOMPUTED_BUFFERS:
            if key in own_buffers and key not in checkpoint["state_dict"]:
                checkpoint["state_dict"][key] = own_buffers[key]
        drop = list(pretrained_frozen_prefixes(self))
        # a frozen part the file holds nothing of (a converted reference checkpoint holds no frozen weight;
        # its config names their source) keeps the weights it was built with
        stored = checkpoint["state_dict"]
        for name, module in self.named_modules():
            if name and is_frozen(module) and not any(name.startswith(p) for p in drop):
                prefix = name + "."
                if not any(k.startswith(prefix) for k in stored):
                    drop.append(prefix)
        if drop:
            own = self.state_dict()
            for k, v in own.items():
                if k.startswith(tuple(drop)) and k not in stored:
                    stored[k] = v
