"""The supervision-strategy contract, checked for every registered strategy (the ``MetricTester`` habit).

Each strategy is built as the builder builds it (``from_config`` with the builder's context: the
training vocabulary's text embeddings, the void embedding, the mask-embedding width, the training
names and the shared CLIP, here the tiny random one) and fed a tiny Mask2Former's real outputs:

* ``prepare_targets`` gives labels in ``0..num_match_classes-1``;
* ``training_logits`` is (B, Q, num_match_classes + 1) for every decoder output;
* the Mask2Former losses on those logits plus ``extra_losses`` are finite, and their gradient
  reaches the strategy's own parameters;
* ``classify`` scores any vocabulary, (B, Q, K + 1), void last.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from odise_pl.config.schema import MaskGeneratorConfig
from odise_pl.models.backbones.base import LEVELS, STRIDES, ShapeSpec
from odise_pl.models.builder import encode_vocabulary, section_to_dataclass
from odise_pl.models.mask_generator.criterion import SetCriterion
from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator
from odise_pl.models.supervision.nouns import SpacyModelError
from odise_pl.registry import SUPERVISIONS

#: hidden_dim == embed_dim, as in every experiment (the caption head reads the decoder's queries)
GENERATOR = MaskGeneratorConfig(
    num_queries=6,
    hidden_dim=32,
    mask_dim=32,
    embed_dim=32,
    dec_layers=1,
    nheads=2,
    dim_feedforward=64,
    enc_layers=1,
    enc_feedforward_dim=64,
    train_num_points=256,
)
TRAIN_NAMES = [["red square", "square"], ["blue circle"], ["grass"]]
EVAL_NAMES = [["zebra"], ["cat", "kitten"], ["sky"], ["road", "street"]]
CAPTIONS = [["a red square on the grass"], ["a blue circle and a red square"]]
B, SIDE = 2, 64


def _targets() -> list[dict]:
    out = []
    for i in range(B):
        masks = torch.zeros(2, SIDE, SIDE, dtype=torch.bool)
        masks[0, 8:32, 8:32] = True
        masks[1, 40:, :] = True
        out.append(
            {
                "masks": masks,
                "labels": torch.tensor([i % 2, 2]),
                "is_thing": torch.tensor([True, False]),
                "iscrowd": torch.zeros(2, dtype=torch.bool),
                "image_id": i,
            }
        )
    return out


@pytest.fixture(scope="module", params=SUPERVISIONS.names())
def strategy(request, tiny_clip):
    entry = SUPERVISIONS.get(request.param)
    cfg = section_to_dataclass({"name": request.param}, entry.config)
    templates = getattr(cfg, "prompt_templates", ["{}"])
    torch.manual_seed(0)
    return entry.cls.from_config(
        cfg,
        train_text=encode_vocabulary(tiny_clip, TRAIN_NAMES, templates),
        void_text_embed=tiny_clip.encode_text([""])[0],
        embed_dim=GENERATOR.embed_dim,
        train_names=TRAIN_NAMES,
        clip=tiny_clip,
    )


@pytest.fixture(scope="module")
def generator_out():
    torch.manual_seed(0)
    generator = Mask2FormerMaskGenerator.from_config(GENERATOR, {k: ShapeSpec(16, STRIDES[k]) for k in LEVELS})
    feats = {k: torch.randn(B, 16, SIDE // STRIDES[k], SIDE // STRIDES[k]) for k in LEVELS}
    out = generator(feats)
    return {k: [t.detach().requires_grad_() for t in out[k]] for k in ("pred_masks", "mask_embeds", "queries")}


def _query_kwargs(strategy, queries):  # as OdiseModule: only to a strategy whose classify takes them
    return {"queries": queries} if "queries" in inspect.signature(strategy.classify).parameters else {}


def test_prepared_targets_and_training_logits_fit_the_matcher(strategy, generator_out):
    targets = strategy.prepare_targets(_targets())
    assert len(targets) == B
    for t in targets:
        assert t["labels"].dtype == torch.long and len(t["labels"]) == len(t["masks"])
        assert 0 <= int(t["labels"].min()) and int(t["labels"].max()) < strategy.num_match_classes
    batch = {"targets": targets, "captions": CAPTIONS}
    for embeds, queries in zip(generator_out["mask_embeds"], generator_out["queries"]):
        logits = strategy.training_logits(embeds, batch, **_query_kwargs(strategy, queries))
        assert logits.shape == (B, GENERATOR.num_queries, strategy.num_match_classes + 1)
        assert torch.isfinite(logits).all()


def test_losses_are_finite_and_train_the_strategy(strategy, generator_out):
    criterion = SetCriterion(
        Mask2FormerMaskGenerator.from_config(GENERATOR, {k: ShapeSpec(16, STRIDES[k]) for k in LEVELS}).config, strategy.num_match_classes
    )
    batch = {"targets": strategy.prepare_targets(_targets()), "captions": CAPTIONS}
    logits = [
        strategy.training_logits(e, batch, **_query_kwargs(strategy, q))
        for e, q in zip(generator_out["mask_embeds"], generator_out["queries"])
    ]
    losses = criterion(generator_out["pred_masks"], logits, batch["targets"])
    try:
        losses.update(strategy.extra_losses(generator_out, batch))
    except SpacyModelError as err:  # caption grounding's nouns need a spaCy pipeline
        pytest.skip(str(err))
    assert losses and all(torch.isfinite(v) and v.ndim == 0 for v in losses.values()), losses
    strategy.zero_grad(set_to_none=True)
    torch.stack(list(losses.values())).sum().backward()
    own = [p for p in strategy.parameters() if p.requires_grad]
    assert own and any(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    strategy.zero_grad(set_to_none=True)


def test_classify_scores_any_vocabulary_with_void_last(strategy, generator_out, tiny_clip):
    text = encode_vocabulary(tiny_clip, EVAL_NAMES, ["{}"])
    with torch.no_grad():
        logits = strategy.classify(generator_out["mask_embeds"][-1], text, **_query_kwargs(strategy, generator_out["queries"][-1]))
    assert logits.shape == (B, GENERATOR.num_queries, len(EVAL_NAMES) + 1)
    assert torch.isfinite(logits).all()
