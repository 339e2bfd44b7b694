"""Vocabularies: the class lists an open-vocabulary model is asked to recognise.

A :class:`Vocabulary` is an ordered tuple of :class:`VocabClass`; each class has
one or more names (the first is the display name, the rest synonyms; a class
scores the maximum over its names), an optional thing/stuff flag and the id it
had in its source file.

Sources:
  * the benchmark lists shipped in ``data/`` (:func:`load_builtin`, e.g.
    ``"ade20k_150"`` or ``"ade20k_150_with_prompt_eng"``; :func:`builtin_names`);
  * a string, ``;`` between classes and ``,`` between synonyms, with an optional
    ``:thing`` / ``:stuff`` marker per class (:func:`parse_vocabulary`)::

        "cat,kitten;dog:thing;grass:stuff"

  * a file (:func:`load_vocabulary_file`): either the builtin format
    ``<id>:<name>[,<synonym>...]`` (``<id>:invalid_class_id`` skips an id and
    keeps the numbering) or one class per line ``<name>[,<synonym>...]``; both
    take the marker, blank lines and ``#`` comments are ignored;
  * the default demo vocabulary, COCO + ADE-150 + LVIS merged and de-duplicated
    (:func:`default_vocabulary`); :func:`build_vocabulary` combines it with a
    user vocabulary the way the command line does.

Method variants of a builtin list are ``<name>_<variant>`` (:func:`builtin_variant`, files in
``variants/<variant>/``): FC-CLIP ships ODISE's lists with three typo fixes (``coco_panoptic_with_prompt_eng_fcclip``: "children", "baseball
field"; ``ade20k_847_with_prompt_eng_fcclip``: "giraffe"); a list it did not change has no variant.

Thing/stuff flags of the builtin lists are dataset facts: COCO panoptic and
ADE20K-150 from ``<stem>_things.txt`` beside the lists, LVIS is all things, the
semantic-only benchmarks (A-847, PC-59/459, PAS-21) have ``None``.

Example:
    >>> vocab = parse_vocabulary("cat,kitten;grass:stuff")
    >>> vocab.names, vocab.synonyms, vocab.is_thing
    (['cat', 'grass'], [['cat', 'kitten'], ['grass']], [None, False])
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from odise_pl.errors import VocabularyError

__all__ = [
    "VocabClass",
    "Vocabulary",
    "normalize_name",
    "parse_vocabulary",
    "parse_vocabulary_lines",
    "load_vocabulary_file",
    "load_vocabulary",
    "is_builtin_name",
    "load_builtin",
    "builtin_names",
    "builtin_variant",
    "default_vocabulary",
    "build_vocabulary",
]

_MARKERS = {"thing": True, "stuff": False}
_ID_LINE = re.compile(r"^(\d+)\s*:(.*)$", re.ASCII)
_INVALID = "invalid_class_id"
_ALL_THINGS = {"lvis_1203"}  # LVIS annotates objects only
DEFAULT_SOURCES = ("coco_panoptic", "ade20k_150", "lvis_1203")
#: suffixes of the method variants of a builtin list (``<name>_fcclip``: FC-CLIP's copy with its typo fixes)
VARIANTS = ("fcclip",)


def normalize_name(name: str) -> str:
    """The form names are compared in: case-folded, ``_`` as space, single spaces."""
    return " ".join(name.replace("_", " ").casefold().split())


@dataclass(frozen=True)
class VocabClass:
    """One class: ``names[0]`` is the display name, the rest are synonyms.

    Attributes:
        names: one or more non-empty names.
        is_thing: True (countable object), False (amorphous stuff) or None (unknown).
        source_id: the class id in its source file (None for string vocabularies).
        source: where the class came from (a builtin name, a file path, "string").
    """

    names: tuple[str, ...]
    is_thing: bool | None = None
    source_id: int | None = None
    source: str | None = None

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, immutable list of classes; class ``k`` is column ``k`` of the logits."""

    classes: tuple[VocabClass, ...]
    name: str = "custom"

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[VocabClass]:
        return iter(self.classes)

    def __getitem__(self, index: int) -> VocabClass:
        return self.classes[index]

    @property
    def names(self) -> list[str]:
        """Display names, one per class."""
        return [c.name for c in self.classes]

    @property
    def synonyms(self) -> list[list[str]]:
        """All names per class (what the text-embedding bank embeds)."""
        return [list(c.names) for c in self.classes]

    @property
    def is_thing(self) -> list[bool | None]:
        return [c.is_thing for c in self.classes]

    def thing_mask(self, default: bool = True) -> list[bool]:
        """Thing flag per class, with ``default`` where it is unknown."""
        return [default if c.is_thing is None else c.is_thing for c in self.classes]

    def with_overrides(self, *, things: Iterable[str] = (), stuff: Iterable[str] = ()) -> Vocabulary:
        """A copy with the classes named in ``things``/``stuff`` (any of their names) re-flagged."""
        index = {normalize_name(n): k for k, c in enumerate(self.classes) for n in c.names}
        flags: dict[int, bool] = {}
        for names, flag in ((things, True), (stuff, False)):
            for n in names:
                if normalize_name(n) not in index:
                    raise VocabularyError(
                        f"cannot mark '{n}' as {'thing' if flag else 'stuff'}: vocabulary "
                        f"'{self.name}' has no class of that name. Check the spelling."
                    )
                flags[index[normalize_name(n)]] = flag
        classes = tuple(replace(c, is_thing=flags.get(k, c.is_thing)) for k, c in enumerate(self.classes))
        return Vocabulary(classes, self.name)

    def merge(self, *others: Vocabulary, name: str | None = None) -> Vocabulary:
        """Append ``others``, dropping repeats: earlier vocabularies win.

        A later class whose display name is already taken (as any name) is dropped;
        otherwise it is kept without the synonyms already taken, so every name of
        the result belongs to exactly one class.
        """
        seen: set[str] = set()
        classes: list[VocabClass] = []
        for vocab in (self, *others):
            for c in vocab.classes:
                if normalize_name(c.name) in seen:
                    continue
                names = tuple(n for n in c.names if normalize_name(n) not in seen)
                seen.update(normalize_name(n) for n in names)
                classes.append(replace(c, names=names))
        return Vocabulary(tuple(classes), name or "+".join(v.name for v in (self, *others)))

    def to_categories(self) -> list[dict]:
        """Data-module style category dicts: ``id`` (source id, else index), ``name``, ``isthing``,
        ``synonyms``."""
        return [
            {"id": c.source_id if c.source_id is not None else k, "name": c.name, "isthing": c.is_thing, "synonyms": list(c.names[1:])}
            for k, c in enumerate(self.classes)
        ]


# ----------------------------------------------------------------------------- parsing


def _parse_entry(entry: str, where: str) -> tuple[tuple[str, ...], bool | None]:
    """``"cat,kitten:thing"`` -> (("cat", "kitten"), True); ``where`` names the entry in errors."""
    text, is_thing = entry.strip(), None
    if not text:
        raise VocabularyError(f"{where} is empty: give at least one class name (classes are separated by ';', synonyms by ',').")
    if ":" in text:
        head, _, marker = text.rpartition(":")
        if marker.strip().casefold() not in _MARKERS:
            raise VocabularyError(
                f"{where} ('{entry.strip()}'): unknown marker '{marker.strip()}' after ':'. "
                f"Write 'name[,synonym...]' with an optional ':thing' or ':stuff' at the end."
            )
        text, is_thing = head.strip(), _MARKERS[marker.strip().casefold()]
        if ":" in text or not text:
            raise VocabularyError(
                f"{where} ('{entry.strip()}') is malformed: one ':thing' or ':stuff' marker at "
                f"the end of a class is allowed, after at least one name."
            )
    names: list[str] = []
    for raw in text.split(","):
        n = " ".join(raw.split())
        if not n:
            raise VocabularyError(f"{where} ('{entry.strip()}') has an empty name: remove the extra ','.")
        if normalize_name(n) not in {normalize_name(m) for m in names}:
            names.append(n)  # a synonym repeated within one class is harmless: keep it once
    return tuple(names), is_thing


def _check_duplicates(classes: Sequence[VocabClass], wheres: Sequence[str], label: str) -> None:
    owner: dict[str, int] = {}
    for k, c in enumerate(classes):
        for n in c.names:
            key = normalize_name(n)
            if key in owner and owner[key] != k:
                j = owner[key]
                raise VocabularyError(
                    f"{label}: the name '{n}' is used by two classes, {wheres[j]} "
                    f"('{','.join(classes[j].names)}') and {wheres[k]} ('{','.join(c.names)}'). "
                    f"Merge them into one class or rename one."
                )
            owner[key] = k


def parse_vocabulary(text: str, *, name: str = "custom") -> Vocabulary:
    """Parse ``"cat,kitten;dog;grass:stuff"``: ``;`` separates classes, ``,`` synonyms.

    Raises:
        VocabularyError: on an empty entry or name, an unknown marker, a name used
            by two classes, or an empty vocabulary.
    """
    if not text or not text.strip():
        raise VocabularyError("the vocabulary string is empty: give classes like 'cat,kitten;dog;grass:stuff'.")
    classes, wheres = [], []
    for i, entry in enumerate(text.split(";"), start=1):
        where = f"class entry {i}"
        names, is_thing = _parse_entry(entry, where)
        classes.append(VocabClass(names, is_thing, None, "string"))
        wheres.append(where)
    _check_duplicates(classes, wheres, f"vocabulary '{text}'")
    return Vocabulary(tuple(classes), name)


def parse_vocabulary_lines(lines: Iterable[str], *, source: str, name: str | None = None, allow_duplicates: bool = False) -> Vocabulary:
    """Parse the lines of a vocabulary file (see the module docstring for the format).

    Args:
        lines: the file's lines.
        source: the file name, used in error messages and ``VocabClass.source``.
        name: the vocabulary's name (default: the file stem).
        allow_duplicates: accept a name shared by two classes (the A-847 benchmark
            list has such classes); user files should leave this off.
    """
    classes, wheres, ids = [], [], {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {lineno} of {source}"
        match = _ID_LINE.match(line)
        source_id = None
        if match:
            if len(match.group(1)) > 18:
                raise VocabularyError(
                    f"{where}: class id '{match.group(1)[:20]}...' is too long; ids are small non-negative integers, e.g. '12:cat'."
                )
            source_id, line = int(match.group(1)), match.group(2)
            if source_id in ids:
                raise VocabularyError(f"{where}: class id {source_id} was already used on line {ids[source_id]}. Each id may appear once.")
            ids[source_id] = lineno
            if line.strip() == _INVALID:
                continue
        names, is_thing = _parse_entry(line, where)
        classes.append(VocabClass(names, is_thing, source_id, source))
        wheres.append(where)
    if not classes:
        raise VocabularyError(
            f"{source} has no classes: write one class per line, '<name>[,<synonym>...]' or '<id>:<name>[,<synonym>...]'."
        )
    if not allow_duplicates:
        _check_duplicates(classes, wheres, source)
    return Vocabulary(tuple(classes), name or Path(source).stem)


def load_vocabulary_file(path: str | Path, *, allow_duplicates: bool = False) -> Vocabulary:
    """Load a vocabulary file (builtin ``id:name,...`` format or one class per line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VocabularyError(
            f"vocabulary file '{path}' not found. Give a text file with one class per line "
            f"('<name>[,<synonym>...]'), or a builtin name: {', '.join(builtin_names())}."
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise VocabularyError(f"vocabulary file '{path}' is not UTF-8 text (byte {err.start}); save it as UTF-8.") from None
    except OSError as err:
        raise VocabularyError(f"vocabulary file '{path}' cannot be read ({err.strerror or err}).") from None
    return parse_vocabulary_lines(text.splitlines(), source=str(path), allow_duplicates=allow_duplicates)


# ----------------------------------------------------------------------------- builtins


def _data_dir():
    return resources.files(__name__).joinpath("data")


@functools.cache
def builtin_names() -> tuple[str, ...]:
    """Names :func:`load_builtin` accepts (the stems of the shipped lists)."""
    return tuple(sorted(p.name[:-4] for p in _data_dir().iterdir() if p.name.endswith(".txt") and not p.name.endswith("_things.txt")))


def _base_name(name: str) -> str:
    """The list's dataset: ``coco_panoptic_with_prompt_eng_fcclip`` -> ``coco_panoptic``."""
    for variant in VARIANTS:
        name = name.removesuffix(f"_{variant}")
    return name.removesuffix("_with_prompt_eng")


def _variant_file(name: str):
    """The file of ``<builtin>_<variant>`` (``variants/<variant>/<builtin>.txt``), or None."""
    for variant in VARIANTS:
        stem = name.removesuffix(f"_{variant}")
        if stem != name:
            file = resources.files(__name__).joinpath("variants", variant, f"{stem}.txt")
            return file if file.is_file() else None
    return None


def builtin_variant(name: str, variant: str | None) -> str:
    """``name``'s builtin ``variant`` where one is shipped, else ``name`` (the method left it unchanged).

    Example:
        >>> builtin_variant("coco_panoptic_with_prompt_eng", "fcclip")
        'coco_panoptic_with_prompt_eng_fcclip'
        >>> builtin_variant("ade20k_150_with_prompt_eng", "fcclip")
        'ade20k_150_with_prompt_eng'
    """
    if variant is None:
        return name
    if variant not in VARIANTS:
        raise VocabularyError(f"unknown vocabulary variant '{variant}'; known: {', '.join(VARIANTS)}.")
    candidate = f"{name}_{variant}"
    return candidate if _variant_file(candidate) is not None else name


def _read_builtin(name: str) -> Vocabulary:
    file = _variant_file(name) or _data_dir().joinpath(f"{name}.txt")
    text = file.read_text(encoding="utf-8")
    return parse_vocabulary_lines(text.splitlines(), source=name, name=name, allow_duplicates=True)


def _thing_flag(base: str):
    """``source_id -> is_thing`` for builtin ``base`` (both variants share ids), or None where unknown."""
    if base in _ALL_THINGS:
        return lambda source_id: True
    file = _data_dir().joinpath(f"{base}_things.txt")
    if not file.is_file():
        return None
    things = parse_vocabulary_lines(file.read_text(encoding="utf-8").splitlines(), source=file.name)
    by_id = {c.source_id: c for c in _read_builtin(base)}
    for t in things:  # guard against the shipped files drifting apart
        if t.source_id not in by_id or by_id[t.source_id].name != t.name:
            raise RuntimeError(f"package data mismatch: {file.name} lists {t.source_id}:{t.name}, which is not a class of {base}.txt")
    ids = {t.source_id for t in things}
    return lambda source_id: source_id in ids


@functools.cache
def load_builtin(name: str) -> Vocabulary:
    """A shipped benchmark vocabulary, e.g. ``"coco_panoptic"`` or ``"ade20k_847_with_prompt_eng"``.

    Class ids (``source_id``) are the ids of the file; skipped ``invalid_class_id``
    lines keep the numbering. Thing flags come from the dataset (see the module docstring).
    """
    if name not in builtin_names() and _variant_file(name) is None:
        close = difflib.get_close_matches(name, builtin_names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise VocabularyError(f"unknown builtin vocabulary '{name}'.{hint} Available: {', '.join(builtin_names())}.")
    vocab = _read_builtin(name)
    flag = _thing_flag(_base_name(name))
    if flag is not None:
        vocab = Vocabulary(tuple(replace(c, is_thing=flag(c.source_id)) for c in vocab), name)
    return vocab


def is_builtin_name(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a shipped list (:func:`builtin_names`) and no such file exists."""
    text = str(name_or_path)
    return text in builtin_names() and not Path(text).expanduser().exists()


def load_vocabulary(name_or_path: str | Path, variant: str | None = None) -> Vocabulary:
    """A vocabulary by name or path: a shipped list (``"ade20k_150"``, where no file of that name exists),
    else a vocabulary file (:func:`load_vocabulary_file`). ``variant`` picks a method's copy of a shipped
    list (:func:`builtin_variant`, ``data.vocabulary_variant``); a file is read as it is.

    A plain word that is neither is taken for a mistyped builtin name (the error suggests the closest).
    """
    if is_builtin_name(name_or_path):
        return load_builtin(builtin_variant(str(name_or_path), variant))
    path = Path(name_or_path).expanduser()
    if not path.exists() and not path.suffix and len(path.parts) == 1:
        return load_builtin(str(name_or_path))  # raises: unknown builtin vocabulary, did you mean ...
    return load_vocabulary_file(path)


@functools.cache
def default_vocabulary(prompt_engineered: bool = True) -> Vocabulary:
    """The demo vocabulary: COCO panoptic + ADE20K-150 + LVIS, merged by :meth:`Vocabulary.merge`."""
    suffix = "_with_prompt_eng" if prompt_engineered else ""
    first, *rest = (load_builtin(s + suffix) for s in DEFAULT_SOURCES)
    return first.merge(*rest, name="default")


def build_vocabulary(vocab: str | None = None, vocab_file: str | Path | None = None, *, include_default: bool = True) -> Vocabulary:
    """The vocabulary of a prediction run: the user's classes first, then (optionally) the default ones.

    Args:
        vocab: a vocabulary string (``"cat,kitten;dog;grass:stuff"``).
        vocab_file: a vocabulary file, or a shipped list by name (:func:`load_vocabulary`; where no such
            file exists).
        include_default: append :func:`default_vocabulary` (user classes win on repeated names).

    Raises:
        VocabularyError: if both user sources are absent and the default is off,
            or a name is used by two user classes.
    """
    parts = []
    if vocab is not None:
        parts.append(parse_vocabulary(vocab, name="vocab"))
    if vocab_file is not None and is_builtin_name(vocab_file):
        # a shipped list (its classes may share a name, e.g. A-847): merged after the user's classes
        parts.append(load_builtin(str(vocab_file)))
    elif vocab_file is not None:
        parts.append(load_vocabulary_file(vocab_file))
    if len(parts) == 2 and not is_builtin_name(vocab_file):
        combined = parts[0].classes + parts[1].classes
        wheres = [f"class {c.name!r} of {c.source}" for c in combined]
        _check_duplicates(combined, wheres, "--vocab and --vocab-file")
        parts = [Vocabulary(combined, "user")]
    if include_default:
        parts.append(default_vocabulary())
    if not parts:
        raise VocabularyError(
            "the vocabulary is empty: give classes (--vocab 'cat;dog' or --vocab-file F) or turn the default vocabulary back on."
        )
    return parts[0].merge(*parts[1:], name="+".join(p.name for p in parts)) if len(parts) > 1 else parts[0]
