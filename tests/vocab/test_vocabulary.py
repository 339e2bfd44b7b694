"""Vocabulary loading: builtin lists, user strings and files, the default demo vocabulary, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odise_pl.errors import VocabularyError
from odise_pl.vocab import (
    VocabClass,
    Vocabulary,
    build_vocabulary,
    builtin_names,
    default_vocabulary,
    load_builtin,
    load_vocabulary_file,
    normalize_name,
    parse_vocabulary,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DATA = Path(__file__).resolve().parents[2] / "odise_pl" / "vocab" / "data"


@pytest.mark.parametrize(
    "name, size, things, stuff",
    [
        ("coco_panoptic", 133, 80, 53),
        ("ade20k_150", 150, 100, 50),
        ("ade20k_847", 847, 0, 0),
        ("pascal_context_59", 59, 0, 0),
        ("pascal_context_459", 459, 0, 0),
        ("pascal_voc_21", 21, 0, 0),
        ("lvis_1203", 1203, 1203, 0),
    ],
)
def test_builtin_sizes_and_thing_split(name, size, things, stuff):
    for variant in (name, name + "_with_prompt_eng"):
        vocab = load_builtin(variant)
        assert len(vocab) == size
        assert sum(t is True for t in vocab.is_thing) == things
        assert sum(t is False for t in vocab.is_thing) == stuff
        assert all(c.names and all(n.strip() == n and n for n in c.names) for c in vocab)


def test_builtin_keeps_source_ids_and_variants_align():
    coco = load_builtin("coco_panoptic")
    ids = [c.source_id for c in coco]
    assert ids[:3] == [1, 2, 3] and ids[-1] == 200
    assert 12 not in ids and 83 not in ids  # invalid_class_id lines are skipped, numbering kept
    prompt = load_builtin("coco_panoptic_with_prompt_eng")
    assert [c.source_id for c in prompt] == ids and prompt.is_thing == coco.is_thing
    assert sum(len(c.names) for c in prompt) > sum(len(c.names) for c in coco)
    assert prompt[0].names[:2] == ("person", "child")
    voc = load_builtin("pascal_voc_21")
    assert voc[0].source_id == 0 and voc[0].name == "background" and "bag" in voc[0].names


def test_ade150_things_spot_checks():
    ade = {c.name: c.is_thing for c in load_builtin("ade20k_150")}
    assert ade["person"] and ade["car"] and ade["bed"] and ade["flag"]
    assert not ade["wall"] and not ade["sky"] and not ade["grass"] and not ade["stairway"]


def test_coco_thing_split_matches_dataset_categories():
    path = SHARED / "data" / "coco_panoptic_sample" / "panoptic_coco_categories.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    isthing = {c["id"]: bool(c["isthing"]) for c in json.loads(path.read_text())}
    coco = load_builtin("coco_panoptic")
    assert {c.source_id: c.is_thing for c in coco} == isthing


def test_package_data_is_a_verbatim_copy():
    src = SHARED / "vocab"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    for f in sorted(src.iterdir()):
        assert (DATA / f.name).read_bytes() == f.read_bytes(), f.name
    assert set(builtin_names()) == {f.stem for f in src.glob("*.txt")}


def test_unknown_builtin_suggests_a_name():
    with pytest.raises(VocabularyError, match="Did you mean 'ade20k_150'"):
        load_builtin("ade20k_15")


def test_parse_string_synonyms_and_markers():
    vocab = parse_vocabulary(" cat , kitten ; dog:THING;grass: stuff;big   tree")
    assert vocab.synonyms == [["cat", "kitten"], ["dog"], ["grass"], ["big tree"]]
    assert vocab.is_thing == [None, True, False, None]
    assert vocab.thing_mask(default=True) == [True, True, False, True]
    assert vocab.thing_mask(default=False) == [False, True, False, False]
    assert parse_vocabulary("cat,cat,Cat").synonyms == [["cat"]]  # repeats within a class are harmless


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("cat;;dog", "class entry 2 is empty"),
        ("cat;dog;", "class entry 3 is empty"),
        ("cat,,kitten", "class entry 1 .* empty name"),
        ("cat;dog,Cat", "'Cat' is used by two classes, class entry 1 .* class entry 2"),
        ("cat;Big_Dog;big dog", "two classes"),
        ("cat:animal", "unknown marker 'animal'"),
        ("a:b:stuff", "malformed"),
        (":thing", "malformed"),
    ],
)
def test_parse_string_errors(text, message):
    with pytest.raises(VocabularyError, match=message):
        parse_vocabulary(text)


def test_file_id_format(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("# my classes\n0:invalid_class_id\n1:cat,kitten\n\n2:grass:stuff\n5:dog\n")
    vocab = load_vocabulary_file(f)
    assert vocab.name == "mine" and vocab.names == ["cat", "grass", "dog"]
    assert [c.source_id for c in vocab] == [1, 2, 5] and vocab.is_thing == [None, False, None]


def test_file_one_class_per_line(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("cat, kitten\ngrass:stuff\ntraffic light:thing\n")
    vocab = load_vocabulary_file(f)
    assert vocab.synonyms == [["cat", "kitten"], ["grass"], ["traffic light"]]
    assert [c.source_id for c in vocab] == [None] * 3 and vocab.is_thing == [None, False, True]


@pytest.mark.parametrize(
    "content, message",
    [
        ("cat\ndog\nCat\n", r"'Cat' is used by two classes, line 1 of .*plain.txt \('cat'\) and line 3"),
        ("1:cat\n1:dog\n", "line 2 .* class id 1 was already used on line 1"),
        ("cat\n,dog\n", "line 2 .* empty name"),
        ("cat\nfoo:bar\n", "line 2 .* unknown marker 'bar'"),
        ("# nothing\n\n", "has no classes"),
        ("0:invalid_class_id\n", "has no classes"),
    ],
)
def test_file_errors_name_the_line(tmp_path, content, message):
    f = tmp_path / "plain.txt"
    f.write_text(content)
    with pytest.raises(VocabularyError, match=message):
        load_vocabulary_file(f)


def test_missing_file():
    with pytest.raises(VocabularyError, match="not found"):
        load_vocabulary_file("/nonexistent/vocab.txt")


def test_default_vocabulary_is_merged_and_unique():
    vocab = default_vocabulary()
    coco = load_builtin("coco_panoptic_with_prompt_eng")
    assert vocab.classes[: len(coco)] == coco.classes  # COCO first, untouched
    names = [normalize_name(n) for c in vocab for n in c.names]
    assert len(names) == len(set(names))  # every name belongs to one class
    assert 1203 < len(vocab) < 133 + 150 + 1203
    sources = {c.source for c in vocab}
    assert sources == {f"{s}_with_prompt_eng" for s in ("coco_panoptic", "ade20k_150", "lvis_1203")}
    assert sum(normalize_name(c.name) == "person" for c in vocab) == 1


def test_build_vocabulary_user_first_and_default_optional(tmp_path):
    only = build_vocabulary("cat,kitten;grass:stuff", include_default=False)
    assert only.names == ["cat", "grass"]
    merged = build_vocabulary("person,human:stuff;zebra crossing")
    assert merged.names[:2] == ["person", "zebra crossing"] and merged[0].is_thing is False
    assert sum("person" in (normalize_name(n) for n in c.names) for c in merged) == 1
    assert len(merged) > len(default_vocabulary())
    f = tmp_path / "v.txt"
    f.write_text("dog\n")
    assert build_vocabulary("cat", f, include_default=False).names == ["cat", "dog"]
    f.write_text("Cat\n")
    with pytest.raises(VocabularyError, match="two classes"):
        build_vocabulary("cat", f, include_default=False)
    with pytest.raises(VocabularyError, match="empty"):
        build_vocabulary(include_default=False)


def test_overrides_and_categories():
    vocab = parse_vocabulary("cat,kitten;grass")
    flipped = vocab.with_overrides(things=["Kitten"], stuff=["grass"])
    assert flipped.is_thing == [True, False] and vocab.is_thing == [None, None]
    with pytest.raises(VocabularyError, match="no class of that name"):
        vocab.with_overrides(things=["dog"])
    assert flipped.to_categories() == [
        {"id": 0, "name": "cat", "isthing": True, "synonyms": ["kitten"]},
        {"id": 1, "name": "grass", "isthing": False, "synonyms": []},
    ]


def test_merge_drops_taken_names():
    a = Vocabulary((VocabClass(("cat",)),), "a")
    b = Vocabulary((VocabClass(("Cat", "feline")), VocabClass(("tomcat", "cat")), VocabClass(("dog",))), "b")
    assert a.merge(b).synonyms == [["cat"], ["tomcat"], ["dog"]]


def test_load_vocabulary_by_name_or_path(tmp_path, monkeypatch):
    from odise_pl.vocab import load_vocabulary

    assert load_vocabulary("ade20k_150") == load_builtin("ade20k_150")
    path = tmp_path / "mine.txt"
    path.write_text("zebra\nocean\n")
    assert load_vocabulary(path).names == ["zebra", "ocean"] == load_vocabulary(str(path)).names
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ade20k_150").write_text("sky\n")  # a file of a builtin's name: the file wins
    assert load_vocabulary("ade20k_150").names == ["sky"]
    with pytest.raises(VocabularyError, match="unknown builtin vocabulary 'ade20k_15'. Did you mean"):
        load_vocabulary("ade20k_15")
    with pytest.raises(VocabularyError, match="vocabulary file '.*missing.txt' not found"):
        load_vocabulary(tmp_path / "missing.txt")
