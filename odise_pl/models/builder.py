"""Turn a validated experiment config into the parts of an :class:`OdiseModule`."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from odise_pl.config.schema import InferenceConfig, MaskGeneratorConfig, OptimConfig, SpeedConfig
from odise_pl.config.sections import instantiate_section
from odise_pl.errors import WeightsError
from odise_pl.models.clip_model import ClipSpec, SharedClip, load_clip, release_clip
from odise_pl.models.mask_generator.criterion import SetCriterion
from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator
from odise_pl.models.odise_module import OdiseModule
from odise_pl.models.open_vocab.text_bank import TextEmbeddingBank
from odise_pl.models.supervision.base import TextEmbeddings
from odise_pl.registry import BACKBONES, SUPERVISIONS


def section_to_dataclass(section: Any, cls: type | None) -> Any:
    """A config section (``name`` + keys) -> an instance of the part's config dataclass
    (:func:`~odise_pl.config.sections.instantiate_section`); a part without one gets a plain dict."""
    if cls is None:
        data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
        data.pop("name", None)
        return data
    return instantiate_section(section, cls)


typed = instantiate_section  # a section, or its dataclass instance as it is


def supervision_text_bank(clip: SharedClip, templates: list[str], normalize: bool = False) -> TextEmbeddingBank:
    """The trained classifier's text bank: **raw** (un-normalised) CLIP text embeddings, as ODISE
    feeds its trainable ``text_proj`` (``ClipAdapter(normalize=False)``); ``normalize`` for strategies
    that classify against the CLIP embeddings themselves (``normalized_text``, FC-CLIP)."""
    return TextEmbeddingBank(clip, templates=list(templates), normalize=normalize)


def encode_vocabulary(clip: SharedClip, names: list[list[str]], templates: list[str], normalize: bool = False) -> TextEmbeddings:
    """CLIP text embeddings of every name of every class (through the cached text bank)."""
    return supervision_text_bank(clip, templates, normalize)(names)


def build_model(
    cfg: DictConfig, categories: list[dict], *, ignore_index: int = 255, eval_categories: list[dict] | None = None
) -> OdiseModule:
    """Build the module from the experiment config and the training data's categories.

    Args:
        cfg: the validated experiment config.
        categories: training categories (``name``, ``synonyms``, ``isthing``), contiguous order.
        eval_categories: evaluation vocabulary (default: the training categories).
    """
    model_cfg = cfg.model
    clip = shared_clip(model_cfg.clip)
    bb_entry = BACKBONES.get(model_cfg.backbone.name)
    try:
        backbone = bb_entry.cls.from_config(section_to_dataclass(model_cfg.backbone, bb_entry.config), clip=clip)
    except WeightsError as err:
        raise WeightsError(f"model.backbone.pretrained: {err}") from err
    mg_cfg = typed(model_cfg.mask_generator, MaskGeneratorConfig)
    mask_generator = Mask2FormerMaskGenerator.from_config(mg_cfg, backbone.output_shape())

    sup_entry = SUPERVISIONS.get(model_cfg.supervision.name)
    sup_cfg = section_to_dataclass(model_cfg.supervision, sup_entry.config)
    train_names = [class_names(c) for c in categories]
    templates = getattr(sup_cfg, "prompt_templates", ["{}"])
    normalized = bool(getattr(sup_entry.cls, "normalized_text", False))
    train_text = encode_vocabulary(clip, train_names, templates, normalized)
    void = clip.encode_text([""])[0]
    supervision = sup_entry.cls.from_config(
        sup_cfg, train_text=train_text, void_text_embed=void, embed_dim=mg_cfg.embed_dim, train_names=train_names, clip=clip
    )
    speed = typed(model_cfg.get("speed") or {}, SpeedConfig)
    criterion = SetCriterion(
        mask_generator.config, supervision.num_match_classes, batched_matching=speed.batched_matching, no_host_syncs=speed.no_host_syncs
    )

    eval_categories = eval_categories or categories
    eval_names = [class_names(c) for c in eval_categories]
    eval_text = encode_vocabulary(clip, eval_names, templates, normalized)
    is_thing = torch.tensor([bool(c.get("isthing", True)) for c in eval_categories])
    inference = typed(model_cfg.inference, InferenceConfig)
    open_vocab = build_open_vocab(
        getattr(backbone, "clip", clip) if inference.clip_features == "backbone" else clip, inference, train_names, eval_names
    )
    optim = typed(cfg.optim, OptimConfig)
    module = OdiseModule(
        backbone=backbone,
        mask_generator=mask_generator,
        supervision=supervision,
        criterion=criterion,
        eval_text=eval_text,
        eval_is_thing=is_thing,
        inference=inference,
        optim=optim,
        max_steps=int(cfg.trainer.max_steps),
        ignore_index=ignore_index,
        config=OmegaConf.to_container(cfg, resolve=True),
        open_vocab=open_vocab,
        text_bank=supervision_text_bank(clip, templates, normalized),
        fused_optimizer=speed.fused_optimizer,
    )
    apply_model_speed(module, model_cfg.get("speed"), clip)
    return module


def shared_clip(section) -> SharedClip:
    """The process-wide CLIP of ``model.clip``; weights that cannot be found are a :class:`WeightsError` naming the key."""
    try:
        return load_clip(ClipSpec(section.model_name, section.pretrained))
    except WeightsError as err:
        raise WeightsError(f"model.clip.pretrained: {err}") from err


def apply_model_speed(module: OdiseModule, section, clip: SharedClip | None = None) -> None:
    """``model.speed`` switches for the whole run (frozen weights cast in place, no float32 copies kept).

    The combination of switches was checked when the config was loaded (``SpeedConfig.problems``).
    """
    from odise_pl.models.speed import apply_speed_options

    if section is None:
        return
    speed = typed(section, SpeedConfig)
    if speed == SpeedConfig():
        return
    if speed.frozen_weights and clip is not None:  # cast in place: later models of this process load their own
        release_clip(clip)
    module.speed_handle = apply_speed_options(module, speed, restorable=False)


def build_open_vocab(clip: SharedClip, inference: InferenceConfig, train_names: list[list[str]], eval_names: list[list[str]]):
    """The CLIP-fusion head for ``inference.classifier`` "clip"/"ensemble" (None for "in_vocab")."""
    from odise_pl.models.open_vocab.ensemble import seen_class_mask
    from odise_pl.models.open_vocab.inference_head import OpenVocabHead

    mode = inference.classifier
    if mode == "in_vocab":
        return None
    head = OpenVocabHead(
        clip,
        mode=mode,
        alpha=inference.alpha,
        beta=inference.beta,
        templates=list(inference.clip_prompt_templates),
        train_names=train_names,
        alignment=inference.clip_mask_alignment,
        features=inference.clip_features,
        ensemble_on_valid_mask=inference.ensemble_on_valid_mask,
    )
    head.set_vocabulary(eval_names, seen=seen_class_mask(eval_names, train_names))  # logs the split (INFO)
    return head


def class_names(category: dict) -> list[str]:
    """A category's names: its display name first, then synonyms (de-duplicated, order kept)."""
    names = [category["name"], *category.get("synonyms", [])]
    return list(dict.fromkeys(n for n in names if n))


__all__ = ["build_model", "class_names", "section_to_dataclass"]
