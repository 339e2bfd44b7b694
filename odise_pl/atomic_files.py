"""The one writer of files: a temporary file beside the target, fsync, rename; and numbered names.

Every file odise-pl writes (configs, categories, metrics and results tables, checkpoints, the
text-bank cache, claim files, sweep records, predict outputs) goes through :func:`atomic_write`
or one of its wrappers, so a crash or a full disk never leaves half a file where a reader looks.

Three ways to write, all atomic (a reader sees the whole old file, the whole new one, or none):

* :func:`atomic_write` / :func:`write_text` / :func:`write_json` replace ``path`` if it exists
  (derived files: a summary rebuilt from the runs, a cache entry);
* :func:`create` writes a file that must not exist yet (FileExistsError otherwise, even when
  another process creates it at the same moment: the name is claimed with a hard link);
* :func:`write_new` never replaces anything: it writes the next free numbered name
  (:func:`next_free_path`) and claims it with a hard link, so two processes writing "the next
  ``metrics.N.json``" at the same time get two different files.

And the numbering rule they share: :func:`numbered` (``metrics.2.json``, ``eval_{n}.json``,
``launch_{n:03d}.json``), :func:`next_free_path` (the first free one, optionally with companion
suffixes free under the same number) and :func:`first_free` (the first number free for a group
of files written together).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_new(d / "metrics.json", "{}").name, write_new(d / "metrics.json", "{}").name
    ('metrics.json', 'metrics.1.json')
    >>> next_free_path(d / "eval_{n}.json").name
    'eval_0.json'
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: the placeholder a name may hold for its number, with an optional format (``eval_{n}.json``, ``launch_{n:03d}.json``)
NUMBER = re.compile(r"\{n(?::([^{}]*))?\}")


def _fsync_folder(folder: Path) -> None:
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some file systems cannot fsync a folder
        pass


def _staged(target: Path, write: Callable[[Any], Any]) -> str:
    """A fsynced temporary file beside ``target`` holding what ``write(handle)`` wrote; its path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _as_writer(data: str | bytes | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if callable(data):
        return data
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return lambda handle: handle.write(payload)


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Any], Any]) -> Path:
    """Write ``data`` (text, bytes, or ``write(binary_handle)``) to ``path``, replacing it atomically.

    On any failure the temporary file is removed and ``path`` is left as it was. Returns ``path``.
    """
    target = Path(path)
    tmp = _staged(target, _as_writer(data))
    try:
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, text)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """:func:`atomic_write` of ``obj`` as JSON (UTF-8, non-ASCII kept, a final newline)."""
    return atomic_write(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def numbered(path: str | os.PathLike, n: int) -> Path:
    """The ``n``-th name of ``path``: ``{n}`` (or ``{n:03d}``) in its name replaced; else ``stem.N.suffix``
    (0: ``path`` itself).

    >>> numbered("run/metrics.json", 0).as_posix(), numbered("run/metrics.json", 2).as_posix()
    ('run/metrics.json', 'run/metrics.2.json')
    >>> numbered("run/eval_{n}.json", 3).name, numbered("launches/launch_{n:03d}.json", 7).name
    ('eval_3.json', 'launch_007.json')
    """
    p = Path(path)
    if NUMBER.search(p.name):
        return p.with_name(NUMBER.sub(lambda m: format(n, m.group(1) or ""), p.name))
    if n == 0:
        return p
    return p.with_name(f"{p.stem}.{n}{p.suffix}")


def first_free(group: Callable[[int], Iterable[Path]]) -> int:
    """The smallest ``n >= 0`` for which no path of ``group(n)`` exists (files written together)."""
    n = 0
    while any(Path(p).exists() for p in group(n)):
        n += 1
    return n


def next_free_path(path: str | os.PathLike, *, companions: Iterable[str] = ()) -> Path:
    """The first of ``numbered(path, 0), numbered(path, 1), ...`` that does not exist.

    ``companions``: other suffixes that must be free under the same number too (``metrics.json``
    with ``.md``: ``metrics.3.json`` only if ``metrics.3.md`` is free as well).
    """
    suffixes = tuple(companions)
    n = first_free(lambda k: [numbered(path, k), *(numbered(path, k).with_suffix(s) for s in suffixes)])
    return numbered(path, n)


def _claim(tmp: str, target: Path) -> None:
    """Give the staged file ``tmp`` the name ``target``; FileExistsError if that name exists."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # pragma: no cover - a file system without hard links: a narrower race guard
        if target.exists():
            raise FileExistsError(target) from None
        os.replace(tmp, target)


def create(path: str | os.PathLike, data: str | bytes | Callable[[Any], Any]) -> Path:
    """Write ``data`` to ``path``, which must not exist (FileExistsError, even in a race); atomic."""
    target = Path(path)
    tmp = _staged(target, _as_writer(data))
    try:
        _claim(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_folder(target.parent)
    return target


def write_new(path: str | os.PathLike, data: str | bytes | Callable[[Any], Any], *, companions: Iterable[str] = ()) -> Path:
    """Write ``data`` to the next free numbered name of ``path`` (never an existing file); returns it.

    The name is claimed with a hard link from the fsynced temporary file, which fails if another
    process took that name in the meantime; the next number is then tried.
    """
    suffixes = tuple(companions)
    first = Path(path)
    tmp = _staged(first, _as_writer(data))
    try:
        while True:
            target = next_free_path(first, companions=suffixes)
            try:
                _claim(tmp, target)
            except FileExistsError:
                continue
            break
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_folder(first.parent)
    return target
