"""A-847 (1,341 prompt-engineered names) through the tiny text tower: chunked, then cached."""

from odise_pl.models.open_vocab.text_bank import TextEmbeddingBank
from odise_pl.vocab import load_builtin


def test_a847_builds_in_bounded_chunks_and_is_reused_from_cache(tiny_vit_clip, tmp_path, monkeypatch):
    vocab = load_builtin("ade20k_847_with_prompt_eng")
    calls: list[int] = []
    real = tiny_vit_clip.encode_text

    def counting(texts, **kw):
        calls.append(len(texts))
        return real(texts, **kw)

    monkeypatch.setattr(tiny_vit_clip, "encode_text", counting)
    bank = TextEmbeddingBank(tiny_vit_clip, chunk_size=128, cache_dir=tmp_path)
    first = bank(vocab)
    assert first.num_classes == 847
    assert first.embeds.shape[0] == len(first.class_index) > 1300
    assert max(calls) <= 128 and len(calls) >= 11  # never more than one chunk in memory at a time
    calls.clear()
    second = TextEmbeddingBank(tiny_vit_clip, chunk_size=128, cache_dir=tmp_path)(vocab)
    assert calls == []  # served from the disk cache
    assert (second.embeds == first.embeds).all()
