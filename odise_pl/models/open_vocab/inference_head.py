"""CLIP fusion at inference: the open-vocabulary head :class:`OdiseModule` calls after its classifier.

:class:`OpenVocabHead` ties together the three open-vocabulary parts:

* the CLIP mask classifier (:class:`~.mask_classifier.ClipMaskClassifier`), one CLIP
  embedding per predicted mask;
* the CLIP text embeddings of the test vocabulary (:class:`~.text_bank.TextEmbeddingBank`,
  with the CLIP prompt templates, ``inference.clip_prompt_templates``);
* the geometric ensemble (:class:`~.ensemble.GeometricEnsemble`) with its seen/unseen
  class split (:func:`~.ensemble.seen_class_mask` against the training vocabulary).

``forward(images, mask_logits, logits)`` turns the trained (in-vocabulary) classifier's
(B,Q,K+1) logits into (B,Q,K+1) probabilities of the chosen mode: ``"in_vocab"`` (plain
softmax, CLIP unused), ``"clip"`` or ``"ensemble"``.

The head holds no weights of its own: the shared CLIP is kept out of the module tree
(it belongs to the backbone / captioner), so adding, removing or switching the head
never changes a checkpoint's keys - the same checkpoint evaluates in every mode.

Example (needs a loaded CLIP, so not a doctest)::

    head = OpenVocabHead(clip, mode="ensemble", alpha=0.3, beta=0.7,
                         train_names=[["cat"], ["dog"]])
    head.set_vocabulary([["cat", "kitten"], ["zebra"]])  # seen: cat; unseen: zebra
    probs = head(images, mask_logits, diffusion_logits)   # (B,Q,3)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from odise_pl.config.schema import InferenceConfig, choices_of
from odise_pl.models.open_vocab.dense_pooling import DenseMaskClassifier
from odise_pl.models.open_vocab.ensemble import MODE_ALIASES, MODES, GeometricEnsemble, SeenSplit, seen_class_mask
from odise_pl.models.open_vocab.mask_classifier import ClipMaskClassifier
from odise_pl.models.open_vocab.text_bank import DEFAULT_TEMPLATES, TextEmbeddingBank
from odise_pl.models.supervision.base import TextEmbeddings

log = logging.getLogger("odise_pl")
#: where the CLIP branch's mask embeddings come from (``model.inference.clip_features``)
FEATURES = choices_of(InferenceConfig, "clip_features")


class OpenVocabHead(nn.Module):
    """CLIP mask classification + geometric ensemble with the trained classifier.

    Args:
        clip: the shared frozen CLIP (:func:`odise_pl.models.clip_model.load_clip`).
        mode: ``"in_vocab"``, ``"clip"`` or ``"ensemble"`` (``inference.classifier``).
        alpha: CLIP's weight for classes seen in training.
        beta: CLIP's weight for unseen classes.
        seen: optional (K,) bool seen-class mask (or :class:`SeenSplit`) of the initial vocabulary.
        templates: CLIP prompt templates for the text side (``inference.clip_prompt_templates``).
        train_names: the training vocabulary (one list of names per class); when given,
            :meth:`set_vocabulary` derives the seen split from it.
        mask_classifier: a prebuilt :class:`ClipMaskClassifier` (default: one on ``clip``).
        text_bank: a prebuilt text bank (default: one on ``clip`` with ``templates``).
        alignment: how masks meet the image in the CLIP branch (``model.inference.clip_mask_alignment``,
            see :data:`~.mask_classifier.ALIGNMENTS`).
        features: ``"image"`` (CLIP runs on the image: :class:`ClipMaskClassifier`, ODISE) or ``"backbone"``
            (the backbone's ``clip_dense`` map of the same pass is pooled: :class:`DenseMaskClassifier`,
            FC-CLIP; ``forward`` then needs ``dense``) (``model.inference.clip_features``).
        ensemble_on_valid_mask: CLIP's weight is 0 for masks empty at CLIP's resolution
            (``features="backbone"``; FC-CLIP's ``ENSEMBLE_ON_VALID_MASK``).
    """

    def __init__(
        self,
        clip,
        mode: str = "ensemble",
        alpha: float = 0.3,
        beta: float = 0.7,
        seen: torch.Tensor | SeenSplit | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        *,
        train_names: Sequence[Sequence[str]] | None = None,
        mask_classifier: ClipMaskClassifier | None = None,
        text_bank: TextEmbeddingBank | None = None,
        alignment: str = "reference",
        features: str = "image",
        ensemble_on_valid_mask: bool = False,
    ) -> None:
        super().__init__()
        mode = MODE_ALIASES.get(mode, mode)
        if mode not in MODES:
            raise ValueError(f"unknown classifier mode '{mode}': set model.inference.classifier to one of {', '.join(MODES)}")
        mask = seen.mask if isinstance(seen, SeenSplit) else seen
        self.ensemble = GeometricEnsemble(mode=mode, alpha=alpha, beta=beta, seen=mask)
        self.train_names = [list(g) for g in train_names] if train_names is not None else None
        # Kept out of the module tree on purpose (see the module docstring); _apply moves them.
        if features not in FEATURES:
            raise ValueError(f"model.inference.clip_features: {features!r} is not one of {', '.join(FEATURES)}")
        self.features = features
        self.ensemble_on_valid_mask = bool(ensemble_on_valid_mask)
        if mask_classifier is None:
            mask_classifier = DenseMaskClassifier(clip) if features == "backbone" else ClipMaskClassifier(clip, alignment=alignment)
        self.__dict__["mask_classifier"] = mask_classifier
        self.__dict__["text_bank"] = text_bank or TextEmbeddingBank(clip, templates=templates)
        self.text: TextEmbeddings | None = None
        self.split: SeenSplit | None = None

    # ------------------------------------------------------------------ properties
    @property
    def mode(self) -> str:
        return self.ensemble.mode

    @property
    def num_classes(self) -> int | None:
        return None if self.text is None else self.text.num_classes

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.mask_classifier._apply(fn)  # the shared CLIP follows the module (idempotent if shared)
        return self

    def train(self, mode: bool = True) -> OpenVocabHead:
        super().train(mode)
        self.mask_classifier.train(False)  # frozen CLIP
        return self

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, names: Sequence[Sequence[str]], seen: torch.Tensor | SeenSplit | None = None) -> SeenSplit | None:
        """Embed a new test vocabulary with CLIP and set its seen/unseen split.

        Args:
            names: one list of names per class (display name first, then synonyms).
            seen: explicit seen mask; default: derived from ``train_names``
                (every class unseen when no training vocabulary is known).

        Returns:
            the seen split (also logged at INFO on the ``odise_pl`` logger).
        """
        groups = [[n] if isinstance(n, str) else list(n) for n in names]
        self.text = self.text_bank(groups)
        if seen is None:
            if self.train_names is not None:
                seen = seen_class_mask(groups, self.train_names)
            else:
                mask = torch.zeros(len(groups), dtype=torch.bool)
                seen = SeenSplit(mask, 0, len(groups))
        elif not isinstance(seen, SeenSplit):
            mask = torch.as_tensor(seen, dtype=torch.bool)
            seen = SeenSplit(mask, int(mask.sum()), int((~mask).sum()))
        if seen.mask.shape != (len(groups),):
            raise ValueError(f"seen mask has shape {tuple(seen.mask.shape)}, expected ({len(groups)},)")
        self.split = seen
        self.ensemble.set_seen(seen)
        log.info(
            "open-vocabulary inference (%s, alpha=%.2f, beta=%.2f): %d classes, %d seen in training, %d unseen",
            self.mode,
            self.ensemble.alpha,
            self.ensemble.beta,
            len(groups),
            seen.num_seen,
            seen.num_unseen,
        )
        return seen

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def clip_logits(self, images: torch.Tensor, mask_logits: torch.Tensor, image_sizes: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) images and (B,Q,h,w) mask logits -> (B,Q,K) CLIP class logits."""
        if self.text is None:
            raise RuntimeError("OpenVocabHead has no vocabulary: call set_vocabulary(names) first")
        embeds = self.mask_classifier(images, mask_logits, image_sizes)
        return self.mask_classifier.logits(embeds, self.text.to(embeds.device))

    @torch.no_grad()
    def dense_clip_logits(self, dense: torch.Tensor | None, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's (B,C,H/32,W/32) map and (B,Q,h,w) mask logits -> (B,Q,K) CLIP class logits and
        (B,Q) bool masks non-empty at the map's resolution (``clip_features: backbone``)."""
        if self.text is None:
            raise RuntimeError("OpenVocabHead has no vocabulary: call set_vocabulary(names) first")
        if dense is None:
            raise ValueError(
                "model.inference.clip_features: backbone pools the backbone's clip_dense map, and "
                "this backbone gives none: use the clip backbone with a ConvNeXt CLIP, or "
                "clip_features: image."
            )
        embeds, valid = self.mask_classifier(dense, mask_logits)
        return self.mask_classifier.logits(embeds, self.text.to(embeds.device)), valid

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        mask_logits: torch.Tensor,
        logits: torch.Tensor,
        *,
        image_sizes: torch.Tensor | None = None,
        is_probs: bool = False,
        dense: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse the trained classifier with CLIP.

        Args:
            images: (B,3,H,W) pixels in [0,255], possibly padded.
            mask_logits: (B,Q,h,w) mask logits of the same images.
            logits: (B,Q,K+1) logits of the trained classifier (void last), or its
                probabilities with ``is_probs=True`` (their log is used: exactly equivalent).
            image_sizes: optional (B,2) valid (h, w) before padding (padding is cut off for CLIP).
            dense: the backbone's ``clip_dense`` map (B,C,H/32,W/32), read with ``features="backbone"``.

        Returns:
            (B,Q,K+1) class probabilities, void last. In "clip" and "ensemble" mode these are, as in the
            reference, ``softmax(log(p + 1e-8))`` of the fused probabilities ``p``: the reference hands
            ``log(p + 1e-8)`` to Mask2Former's post-processing, which applies a softmax.
        """
        logits = logits.float()
        if is_probs:
            logits = logits.clamp(min=torch.finfo(torch.float32).tiny).log()
        if self.mode == "in_vocab":
            return logits.softmax(-1)
        if self.num_classes is not None and logits.shape[-1] - 1 != self.num_classes:
            raise ValueError(
                f"the classifier scores {logits.shape[-1] - 1} classes but the open-vocabulary "
                f"head's vocabulary has {self.num_classes}: change vocabularies with "
                f"OdiseModule.set_vocabulary, which updates both."
            )
        if self.features == "backbone":
            clip, valid = self.dense_clip_logits(dense, mask_logits)
            fused = self.ensemble(logits, clip, valid if self.ensemble_on_valid_mask else None)
        else:
            fused = self.ensemble(logits, self.clip_logits(images, mask_logits, image_sizes))
        return (fused + 1e-8).log().softmax(-1)

    def extra_repr(self) -> str:
        k = self.num_classes
        return f"mode={self.mode}, classes={k}" + (
            "" if self.split is None else f", seen={self.split.num_seen}, unseen={self.split.num_unseen}"
        )


__all__ = ["OpenVocabHead"]
