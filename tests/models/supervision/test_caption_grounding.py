"""Caption grounding supervision: shapes, targets, sampling, word cache, learning, any vocabulary, retrieval."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.engine.retrieval import retrieval_accuracy
from odise_pl.models.supervision.base import TextEmbeddings
from odise_pl.models.supervision.caption_grounding import CaptionGroundingConfig, CaptionGroundingSupervision
from odise_pl.models.supervision.nouns import EMPTY_WORD
from odise_pl.registry import SUPERVISIONS

E, D = 16, 8


class FakeClip:
    """A deterministic 'text tower': one fixed random vector per text, counting calls."""

    embed_dim = E

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(sum(ord(c) * 31**i for i, c in enumerate(t)) % (2**61))
            rows.append(torch.randn(E, generator=g))
        return torch.stack(rows)


class LastWordExtractor:
    """Stands in for spaCy: the caption's words longer than 3 letters."""

    def extract_batch(self, captions):
        return [[w.strip(".,").lower() for w in c.split() if len(w.strip(".,")) > 3] for c in captions]


def _sup(**kw) -> CaptionGroundingSupervision:
    torch.manual_seed(0)
    kw.setdefault("extractor", LastWordExtractor())
    return CaptionGroundingSupervision(clip=FakeClip(), embed_dim=D, seed=0, **kw)


def _targets(b=2):
    return [
        {"masks": torch.zeros(3, 4, 4, dtype=torch.bool), "labels": torch.tensor([4, 0, 7]), "iscrowd": torch.zeros(3, dtype=torch.bool)}
        for _ in range(b)
    ]


def test_registered_with_reference_defaults():
    entry = SUPERVISIONS.get("caption_grounding")
    assert entry.cls is CaptionGroundingSupervision and entry.config is CaptionGroundingConfig
    cfg = CaptionGroundingConfig()
    assert (cfg.num_words, cfg.prompt_template, cfg.loss_weight, cfg.aux_loss) == (8, "a photo of a {}.", 1.0, True)
    assert math.isclose(cfg.logit_scale_init, math.log(1 / 0.07)) and cfg.logit_scale_max == 100.0
    assert cfg.prompt_templates == ["a photo of a {}."]  # the builder embeds eval vocabularies with it


def test_shapes_and_one_match_class():
    sup = _sup()
    assert sup.num_match_classes == 1
    z = torch.randn(2, 5, D)
    assert sup.training_logits(z, {}).shape == (2, 5, 2)
    outputs = {"mask_embeds": [torch.randn(2, 5, D) for _ in range(3)]}
    losses = sup.extra_losses(outputs, {"captions": [["A red circle over grass."], ["Two stars on water."]]})
    assert set(losses) == {"loss_grounding", "loss_grounding_0", "loss_grounding_1"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert set(_sup(aux_loss=False).extra_losses(outputs, {"captions": [["a circle"], ["a star"]]})) == {"loss_grounding"}


def test_targets_become_one_object_class_without_touching_the_originals():
    sup = _sup()
    targets = _targets()
    prepared = sup.prepare_targets(targets)
    assert all(t["labels"].tolist() == [0, 0, 0] for t in prepared)
    assert all(t["category_labels"].tolist() == [4, 0, 7] for t in prepared)
    assert targets[0]["labels"].tolist() == [4, 0, 7]
    assert sup.prepare_targets(prepared)[0] is prepared[0]  # idempotent
    batch = {"targets": targets}  # a caller that does not call prepare_targets still gets 0 labels
    sup.training_logits(torch.randn(2, 5, D), batch)
    assert batch["targets"][1]["labels"].tolist() == [0, 0, 0] and targets[1]["labels"].tolist() == [4, 0, 7]


def test_sampling_is_seeded_per_step_and_handles_captionless_images():
    sup = _sup(num_words=4)
    caps = [["a red circle and a blue square", "yellow stars over water"], [], ["a of"]]
    first = sup.sample_words(caps)
    assert len(first) == 3 and all(len(r) == 4 for r in first)
    assert first[1] == [EMPTY_WORD] * 4 and first[2] == [EMPTY_WORD] * 4
    assert sup.sample_words(caps) == first  # same step, same draws
    draws = set()
    for _ in range(10):
        sup.extra_losses({"mask_embeds": [torch.randn(3, 5, D)]}, {"captions": caps})
        draws.add(tuple(sup.sample_words(caps)[0]))
    assert len(draws) > 1 and sup.get_extra_state() == {"sample_step": 10}


def test_word_embeddings_are_cached_and_the_empty_word_is_zero():
    sup = _sup(word_cache_size=2)
    out = sup.embed_words([["circle", "star", EMPTY_WORD], ["circle", "circle", "star"]])
    assert out.shape == (2, 3, E)
    # raw CLIP text embeddings (the reference's text_proj input), not normalised
    raw = sup._clip.encode_text(["a photo of a circle."])[0]
    sup._clip.calls.pop()
    assert torch.equal(out[0, 2], torch.zeros(E)) and torch.allclose(out[0, 0], raw.float())
    assert sup._clip.calls == [["a photo of a circle.", "a photo of a star."]]
    sup.embed_words([["star", "circle"]])
    assert len(sup._clip.calls) == 1  # cached
    sup.embed_words([["cross"]])
    assert len(sup._word_cache) == 2  # LRU bound


def test_grounding_loss_decreases_on_a_fixed_batch():
    sup = _sup()
    torch.manual_seed(1)
    embeds = nn.Parameter(torch.randn(4, 6, D))
    batch = {"captions": [["a circle"], ["a square"], ["a triangle"], ["a star"]]}
    opt = torch.optim.Adam([embeds, *sup.parameters()], lr=0.05)
    history = []
    for _ in range(15):
        loss = sum(sup.extra_losses({"mask_embeds": [embeds * 0.5, embeds]}, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0], history
    assert sup.text_proj.weight.grad is not None and sup.logit_scale.grad is not None


def test_classify_any_vocabulary_with_the_binary_head_as_void():
    sup = _sup()
    z = torch.randn(2, 5, D)
    for k, names in ((3, 5), (7, 7)):
        text = TextEmbeddings(F.normalize(torch.randn(names, E), dim=-1), torch.tensor(sorted(list(range(k)) + [0] * (names - k))), k)
        logits = sup.classify(z, text)
        assert logits.shape == (2, 5, k + 1)
        p = logits.softmax(-1)
        binary = sup.object_head(z).softmax(-1)
        assert torch.allclose(p[..., -1], binary[..., 1], atol=1e-5)  # p(void) = p(no-object)
        names_proj = F.normalize(sup.text_proj(text.embeds), dim=-1)
        cos = sup.scale() * F.normalize(z, dim=-1) @ names_proj.t()
        expected = torch.stack([cos[..., text.class_index == c].max(-1).values for c in range(k)], -1)
        assert torch.allclose(logits[..., :k], expected, atol=1e-5)  # max over synonyms


def test_bad_template_and_missing_captions_are_explained():
    from odise_pl.errors import ConfigError, DatasetError

    with pytest.raises(ConfigError, match="exactly"):
        _sup(prompt_template="a photo")
    with pytest.raises(DatasetError, match="train_captions_json"):
        _sup().extra_losses({"mask_embeds": [torch.randn(2, 3, D)]}, {"images": torch.zeros(2)})


class _OracleModel(nn.Module):
    """Image i (its pixel value) gets mask embeddings equal to its caption's projected words."""

    def __init__(self, sup, words) -> None:
        super().__init__()
        self.supervision = sup
        self.words = words

    def forward(self, images, captions=None):
        idx = images[:, 0, 0, 0].long().tolist()
        with torch.no_grad():
            w = self.supervision.word_embeddings([self.words[i] for i in idx], images.device)
        return {"mask_embeds": [torch.cat([w, torch.randn(len(idx), 2, D)], 1)]}


def test_retrieval_accuracy_of_an_oracle_and_chance():
    sup = _sup()
    names = ["circle", "square", "triangle", "star", "cross", "grass"]
    model = _OracleModel(sup, [[n] for n in names])
    # image 5 has two captions, image 4 one without a noun phrase (left out)
    caps = [[f"a big {n}"] for n in names]
    caps[5], caps[4] = ["a big grass", "green grass"], ["a big cross", "   "]
    loader = [
        {"images": torch.arange(i, i + 3).view(3, 1, 1, 1).expand(3, 3, 4, 4).to(torch.uint8), "captions": caps[i : i + 3]} for i in (0, 3)
    ]
    res = retrieval_accuracy(model, loader)
    assert res["i2t_r1"] == 100.0 and res["t2i_r1"] == 100.0 and res["i2t_top1"] == 100.0
    assert res["num_images"] == 6 and res["num_captions"] == 7
    assert res["t2i_chance_r1"] == pytest.approx(100 / 6) and res["t2i_chance_r5"] == pytest.approx(500 / 6)
    # one random caption of 7 is one of mine: 1/7 for five images, 2/7 for the one with two captions
    assert res["i2t_chance_r1"] == pytest.approx(100 * (5 / 7 + 2 / 7) / 6)
    # a model that sees every image as "circle": the circle image wins every caption
    blind = _OracleModel(sup, [["circle"]] * 6)
    res = retrieval_accuracy(blind, loader)
    assert res["t2i_r1"] < 50 and res["t2i_r5"] < 100


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_builds_from_config_and_trains_one_step_in_the_module(tiny_clip, tmp_path):
    """Builder -> OdiseModule.training_step with real spaCy nouns and the tiny CLIP."""
    pytest.importorskip("spacy")
    from pathlib import Path

    from odise_pl.config import load_config
    from odise_pl.data_modules.synthetic_shapes import categories_json
    from odise_pl.models.builder import build_model
    from odise_pl.models.supervision.nouns import SpacyModelError

    repo = Path(__file__).resolve().parents[3]
    cfg = load_config(
        repo / "experiments" / "quickstart_caption.yaml",
        ["model.mask_generator.num_queries=6", "model.mask_generator.train_num_points=256"],
    )
    cats = [dict(c, synonyms=[c["name"]]) for c in categories_json()]
    model = build_model(cfg, cats)
    sup = model.supervision
    assert isinstance(sup, CaptionGroundingSupervision) and model.criterion.loss.num_labels == 1
    try:
        sup.extractor.nlp
    except SpacyModelError as err:
        pytest.skip(str(err))
    masks = torch.zeros(2, 2, 64, 64, dtype=torch.bool)
    masks[:, 0, :32], masks[:, 1, 32:] = True, True
    batch = {
        "images": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8),
        "image_sizes": torch.tensor([[64, 64], [64, 64]]),
        "targets": [
            {
                "masks": masks[i],
                "labels": torch.tensor([3, 8]),
                "iscrowd": torch.zeros(2, dtype=bool),
                "is_thing": torch.tensor([True, False]),
                "image_id": i,
            }
            for i in range(2)
        ],
        "captions": [["A red circle over grass."], ["Two stars in front of water and sand."]],
    }
    model.train()
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert sup.object_head.weight.grad is not None and sup.text_proj.weight.grad.abs().sum() > 0
    eval_logits = sup.classify(torch.randn(1, 6, cfg.model.mask_generator.embed_dim), model.eval_text)
    assert eval_logits.shape == (1, 6, len(cats) + 1)

    # the sampling step is extra state: checkpointed, but not a weight of the safetensors export
    from safetensors.torch import load_file

    from odise_pl.engine.checkpoints import export_safetensors

    assert sup.sample_step == 1 and model.state_dict()["supervision._extra_state"] == {"sample_step": 1}
    path = export_safetensors(model, tmp_path / "w.safetensors")
    exported = load_file(str(path))
    assert "supervision.text_proj.weight" in exported and "supervision._extra_state" not in exported
    assert torch.equal(exported["supervision.text_proj.weight"], sup.text_proj.weight.detach())
