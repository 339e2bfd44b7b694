"""The text-embedding bank: layout, template averaging, chunking and the disk cache."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from odise_pl.errors import ConfigError
from odise_pl.models.open_vocab.text_bank import TextEmbeddingBank, default_cache_dir
from odise_pl.vocab import parse_vocabulary

VOCAB = parse_vocabulary("cat,kitten,kitty;dog;grass,lawn:stuff")


@pytest.fixture
def counted(tiny_vit_clip, monkeypatch):
    """The tiny CLIP with its text encoder calls counted (number of calls, number of texts)."""
    calls = []
    original = tiny_vit_clip.encode_text

    def encode_text(texts, **kwargs):
        calls.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(tiny_vit_clip, "encode_text", encode_text)
    return tiny_vit_clip, calls


def test_layout_and_normalisation(counted, tmp_path):
    clip, calls = counted
    text = TextEmbeddingBank(clip, cache_dir=tmp_path)(VOCAB)
    assert text.embeds.shape == (6, clip.embed_dim) and text.num_classes == 3
    assert text.class_index.tolist() == [0, 0, 0, 1, 2, 2]
    torch.testing.assert_close(text.embeds.norm(dim=-1), torch.ones(6))
    direct = clip.encode_text(["a photo of a kitten."], normalize=True)[0]
    torch.testing.assert_close(text.embeds[1], direct, rtol=1e-5, atol=1e-6)


def test_templates_are_averaged_then_normalised(counted, tmp_path):
    clip, _ = counted
    templates = ["a photo of a {}.", "{}", "a drawing of the {} here"]
    text = TextEmbeddingBank(clip, templates=templates, cache_dir=tmp_path)([["dog"], ["tree"]])
    for row, name in enumerate(["dog", "tree"]):
        per_template = clip.encode_text([t.format(name) for t in templates], normalize=True)
        expected = F.normalize(per_template.mean(0), dim=-1)
        torch.testing.assert_close(text.embeds[row], expected, rtol=1e-5, atol=1e-6)
    raw = TextEmbeddingBank(clip, templates=["{}"], normalize=False, cache=False)([["dog"]])
    torch.testing.assert_close(raw.embeds[0], clip.encode_text(["dog"])[0], rtol=1e-5, atol=1e-6)


def test_chunking_bounds_each_call(counted):
    clip, calls = counted
    whole = TextEmbeddingBank(clip, templates=["{}", "a {}."], chunk_size=1000, cache=False)(VOCAB)
    calls.clear()
    chunked = TextEmbeddingBank(clip, templates=["{}", "a {}."], chunk_size=5, cache=False)(VOCAB)
    assert calls == [5, 5, 2]  # 6 names x 2 templates = 12 texts
    torch.testing.assert_close(chunked.embeds, whole.embeds, rtol=1e-5, atol=1e-6)


def test_second_call_loads_from_cache(counted, tmp_path):
    clip, calls = counted
    first = TextEmbeddingBank(clip, cache_dir=tmp_path)(VOCAB)
    assert len(calls) == 1
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temp file left behind
    again = TextEmbeddingBank(clip, cache_dir=tmp_path)(VOCAB)
    assert len(calls) == 1  # no encoder call: read from disk
    assert torch.equal(again.embeds, first.embeds) and torch.equal(again.class_index, first.class_index)
    TextEmbeddingBank(clip, templates=["{}"], cache_dir=tmp_path)(VOCAB)  # other templates: other entry
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2


def test_cache_key_depends_on_grouping_and_names(tiny_vit_clip, tmp_path):
    bank = TextEmbeddingBank(tiny_vit_clip, cache_dir=tmp_path)
    keys = {bank.cache_key(groups) for groups in ([["cat", "dog"]], [["cat"], ["dog"]], [["cat"], ["dogs"]])}
    assert len(keys) == 3
    fresh = TextEmbeddingBank(tiny_vit_clip, cache_dir=tmp_path)
    assert bank.cache_key([["cat"], ["dog"]]) == fresh.cache_key([["cat"], ["dog"]])
    other = TextEmbeddingBank(tiny_vit_clip, cache_dir=tmp_path, normalize=False)
    assert other.cache_key([["cat"]]) != bank.cache_key([["cat"]])


def test_damaged_cache_is_recomputed(counted, tmp_path):
    clip, calls = counted
    bank = TextEmbeddingBank(clip, cache_dir=tmp_path)
    first = bank(VOCAB)
    bank.cache_path(VOCAB.synonyms).write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable text-bank cache"):
        again = bank(VOCAB)
    assert len(calls) == 2 and torch.equal(again.embeds, first.embeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bank(VOCAB)  # the rewritten file loads cleanly
    assert len(calls) == 2


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ODISE_PL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text_bank"
    monkeypatch.delenv("ODISE_PL_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "odise_pl", "text_bank")


@pytest.mark.parametrize("templates", [[], ["a photo"], ["{} and {}"], ["{a} {}"]])
def test_bad_templates(tiny_vit_clip, templates):
    with pytest.raises(ConfigError, match="template"):
        TextEmbeddingBank(tiny_vit_clip, templates=templates)
