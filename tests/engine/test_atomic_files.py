"""The one writer: atomic replacement, never-overwrite numbering, and fsync before rename."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from odise_pl import atomic_files
from odise_pl.atomic_files import atomic_write, create, next_free_path, numbered, write_json, write_new


def test_atomic_write_replaces_and_a_failing_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write(target, "first")
    assert target.read_text() == "first"

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic_files.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic_files.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_json(tmp_path / "m.json", {"PQ": 1.5})
    assert events[:2] == ["fsync", "replace"]  # the file's data, then its name (then the folder)
    assert (tmp_path / "m.json").read_text() == '{\n  "PQ": 1.5\n}\n'


def test_write_new_numbers_and_never_overwrites(tmp_path):
    paths = [write_new(tmp_path / "metrics.json", str(i)) for i in range(3)]
    assert [p.name for p in paths] == ["metrics.json", "metrics.1.json", "metrics.2.json"]
    assert [p.read_text() for p in paths] == ["0", "1", "2"]
    (tmp_path / "metrics.3.md").write_text("a table of another write")
    assert write_new(tmp_path / "metrics.json", "4", companions=(".md",)).name == "metrics.4.json"
    assert next_free_path(tmp_path / "eval_{n}.json").name == "eval_0.json"
    assert numbered(tmp_path / "config.yaml", 2).name == "config.2.yaml"


def test_create_refuses_an_existing_file(tmp_path):
    create(tmp_path / "x.png", b"\x89PNG")
    with pytest.raises(FileExistsError):
        create(tmp_path / "x.png", b"other")
    assert (tmp_path / "x.png").read_bytes() == b"\x89PNG"


def _write_many(folder: str, tag: int, count: int) -> None:
    for i in range(count):
        write_new(Path(folder) / "eval_{n}.json", f"{tag}-{i}")


def test_concurrent_writers_never_share_a_number(tmp_path):
    ctx = mp.get_context("fork")  # fork: no re-import; the writers only do file IO
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), tag, 15)) for tag in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = sorted(tmp_path.glob("eval_*.json"))
    contents = sorted(f.read_text() for f in files)
    assert len(files) == 45 and contents == sorted(f"{t}-{i}" for t in range(3) for i in range(15))
    assert {f.name for f in files} == {f"eval_{n}.json" for n in range(45)}
