"""Property-based tests: whatever the text, the vocabulary parser answers with a vocabulary or a VocabularyError."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from odise_pl.errors import VocabularyError
from odise_pl.vocab import Vocabulary, load_vocabulary_file, parse_vocabulary, parse_vocabulary_lines

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VOCAB_CHARS = "catdogCD _-,;:#\n\t 01907" + "éß\u00a0\u0663"  # separators, markers, digits (also Arabic-Indic)
_counter = itertools.count()
_pieces = st.sampled_from(
    [
        "cat",
        "Cat",
        "dog",
        ":thing",
        ":stuff",
        ":x",
        ",",
        ";",
        " ",
        "0:",
        "12:",
        "\n",
        "invalid_class_id",
        "#",
        "9" * 5000,
        "\u0663:",
        "grass:stuff",
    ]
)


def _check(parse, *args, **kwargs) -> None:
    try:
        vocab = parse(*args, **kwargs)
    except VocabularyError as err:
        assert str(err)  # a message, never an empty error
        return
    assert isinstance(vocab, Vocabulary) and len(vocab) > 0
    assert all(c.names and all(n.strip() for n in c.names) for c in vocab)  # no empty names slip through


@SETTINGS
@given(text=st.one_of(st.text(alphabet=VOCAB_CHARS, max_size=60), st.text(max_size=40), st.lists(_pieces, max_size=12).map("".join)))
def test_any_string_gives_a_vocabulary_or_a_vocabulary_error(text):
    _check(parse_vocabulary, text)


@SETTINGS
@given(lines=st.lists(st.one_of(st.text(alphabet=VOCAB_CHARS, max_size=30), st.lists(_pieces, max_size=6).map("".join)), max_size=8))
def test_any_lines_give_a_vocabulary_or_a_vocabulary_error(lines):
    _check(parse_vocabulary_lines, lines, source="fuzz.txt")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("vocab_props")


@SETTINGS
@given(content=st.binary(max_size=200))
def test_any_file_gives_a_vocabulary_or_a_vocabulary_error(folder, content):
    path = folder / f"v{next(_counter)}.txt"
    path.write_bytes(content)
    _check(load_vocabulary_file, path)


def test_non_utf8_file_names_the_file_and_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("cat\nchâteau\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match=rf"{path}.* not UTF-8 text \(byte 6\)"):
        load_vocabulary_file(path)
