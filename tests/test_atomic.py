"""An exception mid-write keeps the previous good file and leaves no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import scangen.atomic as atomic
from scangen.store import load_bags, read_meta, read_slides, write_embeddings, write_meta, write_slides
from test_store_common import FM, make_store, toy_slides


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _boom(*args, **kwargs):
    raise RuntimeError("disk on fire")


def test_failed_embedding_write_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    store, d = make_store(tmp_path)
    before = (store / "embeddings" / f"{FM}.parquet").read_bytes()
    monkeypatch.setattr(pq, "write_table", _boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_embeddings(store, FM, d["ids"], d["offsets"], d["features"] * 2, d["coords"])
    assert (store / "embeddings" / f"{FM}.parquet").read_bytes() == before
    assert _files(store / "embeddings") == [f"{FM}.parquet"]
    monkeypatch.undo()
    np.testing.assert_array_equal(load_bags(store, FM).features, d["features"])


def test_failed_slides_write_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    store, d = make_store(tmp_path)
    before = _files(store)

    def half_write(table, where, **kwargs):
        where.write(b"PAR1 partial garbage")
        raise OSError("interrupted")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="interrupted"):
        write_slides(store, toy_slides(n_specimens=1))
    monkeypatch.undo()
    assert _files(store) == before
    assert read_slides(store).height == d["slides"].height


def test_failed_meta_write_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    store, _ = make_store(tmp_path)
    monkeypatch.setattr(atomic.os, "replace", _boom)
    with pytest.raises(RuntimeError):
        write_meta(store, {"simulated": False, "models": {}})
    monkeypatch.undo()
    assert read_meta(store)["simulated"] is True
    assert not [n for n in _files(store) if n.endswith(".tmp")]


def test_written_files_are_readable_by_others(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    assert (store / "slides.parquet").stat().st_mode & 0o044 == 0o044


def test_atomic_write_with_keeps_previous_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    atomic.atomic_write_text(target, "good")

    def half_write(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic.atomic_write_with(target, half_write)
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]
    atomic.atomic_write_with(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
