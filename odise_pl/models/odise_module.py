"""The LightningModule: backbone -> mask generator -> supervision -> inference -> metrics.

It builds nothing from config itself (see :mod:`odise_pl.models.builder`); it
only composes the parts it is given, trains them, and evaluates them.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from odise_pl.config.schema import InferenceConfig, OptimConfig, aliases_of, choices_of
from odise_pl.metrics.mask_ap import mask_ap_metric, panoptic_to_instances, summarize_mask_ap
from odise_pl.metrics.panoptic_quality import PanopticQuality
from odise_pl.metrics.semantic_iou import AVERAGES, SemanticIoU
from odise_pl.models.frozen import is_frozen, keep_frozen_in_eval, pretrained_frozen_prefixes, strip_pretrained_frozen
from odise_pl.models.inference.segment import TASKS, check_tasks, masks_to_output, postprocess_image
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
        fused_optimizer: ``model.speed.fused_optimizer``: AdamW with one fused kernel per parameter group
            (:func:`~odise_pl.models.optim.build_optimizer`).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        mask_generator: nn.Module,
        supervision: SupervisionStrategy,
        criterion: SetCriterion,
        eval_text: TextEmbeddings,
        eval_is_thing: torch.Tensor,
        inference: InferenceConfig,
        optim: OptimConfig,
        max_steps: int,
        open_vocab: nn.Module | None = None,
        ignore_index: int = 255,
        config: dict | None = None,
        text_bank=None,
        fused_optimizer: bool = False,
    ) -> None:
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
        self.fused_optimizer = fused_optimizer
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
            raise RuntimeError(
                "this OdiseModule was built without a text bank: build it with odise_pl.models.builder.build_model to change vocabularies"
            )
        text = self.text_bank(groups)
        self.set_eval_vocabulary(text, torch.tensor([bool(t) for t in is_thing], device=self.device))
        if self.open_vocab is not None and hasattr(self.open_vocab, "set_vocabulary"):
            self.open_vocab.set_vocabulary(groups)

    def set_classifier(self, classifier: str, alpha: float | None = None, beta: float | None = None) -> None:
        """Switch the test-time classifier (``model.inference.classifier``) and CLIP's ensemble weights.

        ``clip`` and ``ensemble`` need the CLIP branch (:attr:`open_vocab`), which the builder adds when
        the model is built with one of them; a model built so can switch to every choice, one built
        with the trained classifier alone keeps it. ``alpha`` / ``beta`` None keep the current weights.
        """
        choices = choices_of(InferenceConfig, "classifier")
        classifier = aliases_of(InferenceConfig, "classifier").get(classifier, classifier)  # e.g. diffusion
        if classifier not in choices:
            raise ValueError(f"unknown classifier '{classifier}': use one of {', '.join(choices)}")
        cfg = self.inference_cfg
        new = dataclasses.replace(
            cfg, classifier=classifier, alpha=cfg.alpha if alpha is None else float(alpha), beta=cfg.beta if beta is None else float(beta)
        )
        bad = [f"{key}={getattr(new, key)}" for key in ("alpha", "beta") if not 0 <= getattr(new, key) <= 1]
        if bad:
            raise ValueError(f"{', '.join(bad)} outside [0, 1] (CLIP's weight in the ensemble)")
        head = self.open_vocab
        if head is None or not hasattr(head, "ensemble"):
            if classifier != cfg.classifier:
                raise ValueError(
                    f"this model was built with model.inference.classifier={cfg.classifier}, without "
                    f"the CLIP branch: build it with classifier=ensemble to switch to '{classifier}'"
                )
        else:
            head.ensemble.mode, head.ensemble.alpha, head.ensemble.beta = classifier, new.alpha, new.beta
        self.inference_cfg = new

    # -------------------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, captions: list[str] | None = None, image_sizes: torch.Tensor | None = None) -> dict:
        """images (B,3,H,W) in [0,255] -> mask generator outputs (see Mask2FormerMaskGenerator), plus the
        backbone's ``clip_dense`` map when it gives one (the open-vocabulary head may pool it).

        ``image_sizes`` (B,2) valid (h, w): read by backbones that pad after normalising.
        """
        kwargs = {"image_sizes": image_sizes} if getattr(self.backbone, "wants_image_sizes", False) else {}
        feats = self.backbone(images.float(), captions, **kwargs)
        out = self.mask_generator(feats)
        if "clip_dense" in feats:
            out["clip_dense"] = feats["clip_dense"]
        return out

    @property
    def num_queries(self) -> int:
        """Q, the mask generator's queries (masks per image)."""
        return int(self.mask_generator.config.num_queries)

    def train(self, mode: bool = True) -> OdiseModule:
        super().train(mode)
        keep_frozen_in_eval(self)
        return self

    @staticmethod
    def batch_captions(batch: dict) -> list[str] | None:
        """The first caption of each image of ``batch`` (``""`` where it has none), or None without captions.

        Example:
            >>> OdiseModule.batch_captions({"captions": [["a dog", "a pet"], [], "a cat"]})
            ['a dog', '', 'a cat']
            >>> OdiseModule.batch_captions({"images": None}) is None
            True
        """
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
        out = self(batch["images"], self.batch_captions(batch))  # LSJ crops fill the batch: no padding
        batch = {**batch, "targets": self.supervision.prepare_targets(batch["targets"])}
        logits = [self.supervision.training_logits(e, batch, **self._query_kwargs(q)) for e, q in zip(out["mask_embeds"], out["queries"])]
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
    def predict_probs(self, images: torch.Tensor, out: dict, image_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities (B,Q,K+1) and mask logits (B,Q,h,w) of the last decoder layer."""
        masks, embeds = out["pred_masks"][-1], out["mask_embeds"][-1]
        logits = self.supervision.classify(embeds, self.eval_text.to(embeds.device), **self._query_kwargs(out["queries"][-1]))
        if self.open_vocab is not None:
            probs = self.open_vocab(images, masks, logits, image_sizes=image_sizes, dense=out.get("clip_dense"))
        else:
            probs = logits.float().softmax(-1)
        return probs, masks

    masks_to_output = staticmethod(masks_to_output)

    def inference_tasks(self) -> tuple[str, ...]:
        """The post-processing outputs ``model.inference`` turns on (``panoptic_on``, ``semantic_on``, ``instance_on``)."""
        cfg = self.inference_cfg
        on = (cfg.panoptic_on, cfg.semantic_on, getattr(cfg, "instance_on", False))
        return tuple(task for task, enabled in zip(TASKS, on) if enabled)

    @torch.no_grad()
    def segment(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor | Sequence[Sequence[int]],
        output_sizes: Sequence[Sequence[int]] | None = None,
        *,
        captions: list[str] | None = None,
        tasks: Sequence[str] | None = None,
        semantic_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[dict]:
        """Segment a padded batch: the one path of evaluation, the TensorBoard pictures and the Predictor.

        The classifier (trained, ``clip`` or ``ensemble``) sees each image's valid area only; the
        masks are cut to it and brought to the output size, where the post-processing runs
        (:func:`~odise_pl.models.inference.segment.postprocess_image`).

        Args:
            images: (B, 3, H_pad, W_pad) in [0, 255], each image at the top-left of its padding.
            image_sizes: (B, 2) valid (H, W) of each image.
            output_sizes: (H_out, W_out) per image (default: its valid size).
            captions: one caption per image, read only by ``diffusion_unet`` with ``caption_mode: caption``.
            tasks: a subset of ``("panoptic", "semantic", "instances")`` (default: :meth:`inference_tasks`).
            semantic_sizes: the semantic map's size per image (default: its output size).

        Returns:
            One dict per image: ``probs`` (Q, K+1) and the ``tasks``' outputs (``panoptic``:
            ``(ids, segments)``, ``semantic``: (H, W) int64, ``instances``: ``masks``/``scores``/``labels``).
        """
        tasks = check_tasks(self.inference_tasks() if tasks is None else tasks)
        sizes = [tuple(int(v) for v in s) for s in image_sizes]
        if len(sizes) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(sizes)} image sizes")
        outputs = sizes if output_sizes is None else [tuple(int(v) for v in s) for s in output_sizes]
        sizes_t = torch.tensor(sizes, device=images.device)
        probs, masks = self.predict_probs(images, self(images, captions, sizes_t), sizes_t)
        cfg = self.inference_cfg
        padded = tuple(images.shape[-2:])
        results = []
        for i, (size, output) in enumerate(zip(sizes, outputs)):
            res = postprocess_image(
                probs[i],
                masks[i],
                image_size=size,
                output_size=output,
                padded=padded,
                is_thing=self.eval_is_thing,
                tasks=tasks,
                object_mask_threshold=cfg.object_mask_threshold,
                overlap_threshold=cfg.overlap_threshold,
                instance_topk=getattr(cfg, "instance_topk", 100),
                semantic_size=None if semantic_sizes is None else semantic_sizes[i],
                semantic_order=getattr(cfg, "semantic_postprocess", "masks_first"),
            )
            results.append({"probs": probs[i].float(), **res})
        return results

    def _eval_step(self, batch: dict, pq, sem, ap=None) -> None:
        targets = batch["targets"]
        results = self.segment(
            batch["images"], batch["image_sizes"], [t["orig_size"] for t in targets], captions=self.batch_captions(batch)
        )
        for res, target in zip(results, targets):
            if "panoptic" in res and "gt_panoptic" in target:  # semantic-only sets have no panoptic GT
                ids, segs = res["panoptic"]
                pq.update(ids, segs, target["gt_panoptic"].to(ids.device), target["gt_segments"])
            if "semantic" in res:
                sem.update(res["semantic"], target["gt_semantic"].to(res["semantic"].device))
            if "instances" in res and ap is not None and "gt_panoptic" in target:
                inst = res["instances"]
                gt = panoptic_to_instances(target["gt_panoptic"].to(inst["masks"].device), target["gt_segments"], self.eval_is_thing)
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

    def per_class_metrics(self, stage: str, pq, sem) -> dict[str, float]:
        """Per-class scores as ``{stage_per_class/PQ/<k>: value}`` (percent; also SQ, RQ, IoU).

        Only classes the metric has seen appear (PQ: TP + FP + FN > 0; IoU: in target or
        prediction). Reads the metric states synchronised over ranks (a collective: every rank calls
        it); does not reset them. ``<k>`` is the class index in the evaluation vocabulary.
        """
        out: dict[str, float] = {}
        if self.inference_cfg.panoptic_on:
            with pq.sync_context():
                per = pq.per_class()
            for k in torch.nonzero(per["valid"]).flatten().tolist():
                out.update({f"{stage}_per_class/{name}/{k}": float(per[name][k]) for name in ("PQ", "SQ", "RQ")})
        if self.inference_cfg.semantic_on:
            iou = sem.compute()["IoU"]
            out.update({f"{stage}_per_class/IoU/{k}": float(iou[k]) for k in torch.nonzero(~torch.isnan(iou)).flatten().tolist()})
        return out

    @property
    def log_per_class(self) -> bool:
        """``logging.log_per_class`` of the config: per-class PQ/SQ/RQ/IoU to TensorBoard after each evaluation."""
        logging_cfg = (self.hparams.get("config") or {}).get("logging") or {}
        return bool(logging_cfg.get("log_per_class", False))

    def _log_eval(self, stage: str, pq, sem, ap=None) -> None:
        if self.log_per_class:
            per_class = self.per_class_metrics(stage, pq, sem)
            experiment = getattr(self.logger, "experiment", None) if self._trainer is not None else None
            if self.trainer.is_global_zero and hasattr(experiment, "add_scalar"):
                for tag, value in per_class.items():
                    experiment.add_scalar(tag, value, self.global_step)
        metrics = self.eval_metrics(stage, pq, sem, ap)
        self.log_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in metrics.items()}, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_pq, self.val_sem, self.val_ap)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_pq, self.test_sem, self.test_ap)

    # ------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        optimizer = build_optimizer(self.trainer.model if self._trainer is not None else self, self.optim_cfg, fused=self.fused_optimizer)
        scheduler = build_scheduler(optimizer, self.optim_cfg, self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Pretrained frozen weights are re-loaded from their source, not stored."""
        checkpoint["state_dict"] = strip_pretrained_frozen(checkpoint["state_dict"], self)

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
