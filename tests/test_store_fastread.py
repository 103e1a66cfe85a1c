"""The numpy page decoder gives exactly pyarrow's values, and falls back whenever the layout differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import scangen.store.columns as columns
import scangen.store.writer as writer
from scangen.store import fastread, load_bags, write_embeddings, write_meta, write_slides
from scangen.store.schema import embeddings_path
from test_store_common import toy_slides


def _store(root: Path, dtype, monkeypatch, page_bytes: int = 256, group_bytes: int = 1) -> tuple[Path, np.ndarray]:
    """A store whose embedding column spans several row groups and several pages per group."""
    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", group_bytes)
    monkeypatch.setattr(writer, "DATA_PAGE_BYTES", page_bytes)
    slides = toy_slides(n_specimens=150)
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 15, slides.height)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    feats = (rng.standard_normal((offsets[-1], 5)) * 100).astype(dtype)
    write_slides(root, slides)
    write_embeddings(root, "m", slides["slide_id"].to_list(), offsets, feats, np.zeros((offsets[-1], 2), np.int32))
    write_meta(root, {"simulated": True, "models": {"m": 5}})
    return root, feats


def _pyarrow_only(root: Path, monkeypatch, **kw):
    monkeypatch.setattr(columns, "FAST_PATH", False)
    try:
        return load_bags(root, "m", **kw)
    finally:
        monkeypatch.setattr(columns, "FAST_PATH", True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_fast_path_matches_pyarrow(tmp_path: Path, monkeypatch, dtype) -> None:
    root, feats = _store(tmp_path, dtype, monkeypatch)
    path = embeddings_path(root, "m")
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups > 1
    assert fastread.page_ranges(pq.ParquetFile(path), 5, np.dtype(dtype).itemsize) is not None
    for out_dtype in (None, np.float32, np.float16):
        fast = load_bags(root, "m", dtype=out_dtype)
        slow = _pyarrow_only(root, monkeypatch, dtype=out_dtype)
        assert fast.features.dtype == slow.features.dtype
        np.testing.assert_array_equal(fast.features, slow.features)
    np.testing.assert_array_equal(load_bags(root, "m", dtype=None).features, feats)


def test_chunk_decoder_directly_and_on_bad_offsets(tmp_path: Path, monkeypatch) -> None:
    root, feats = _store(tmp_path, np.float16, monkeypatch)
    path = embeddings_path(root, "m")
    handle = pq.ParquetFile(path)
    ranges = fastread.page_ranges(handle, 5, 2)
    rows = handle.metadata.row_group(0).num_rows
    out = np.empty((rows, 5), np.float16)
    assert fastread.read_chunk(path, *ranges[0], out)
    np.testing.assert_array_equal(out, feats[:rows])
    offset, length = ranges[0]
    assert not fastread.read_chunk(path, offset + 3, length, out)  # garbage header: refuse, never raise
    assert not fastread.read_chunk(path, offset, length - 10, out)  # truncated chunk
    assert not fastread.read_chunk(path, 0, 4, out)  # the magic bytes are no page


def test_other_layouts_fall_back(tmp_path: Path, monkeypatch) -> None:
    root, feats = _store(tmp_path, np.float16, monkeypatch)
    path = embeddings_path(root, "m")
    table = pq.read_table(path)
    # PLAIN pages are decoded too
    pq.write_table(table, path, use_dictionary=False, compression="none", data_page_size=128, row_group_size=300)
    assert fastread.page_ranges(pq.ParquetFile(path), 5, 2) is not None
    np.testing.assert_array_equal(load_bags(root, "m", dtype=None).features, feats)
    # compressed or dictionary-encoded pages go through pyarrow
    for options in ({"compression": "zstd"}, {"use_dictionary": True}):
        pq.write_table(table, path, **options)
        assert fastread.page_ranges(pq.ParquetFile(path), 5, 2) is None
        np.testing.assert_array_equal(load_bags(root, "m", dtype=None).features, feats)
    # a nullable list (foreign writer) has other definition levels: pyarrow again
    nullable = pa.list_(pa.float16(), 5)
    loose = table.set_column(table.schema.get_field_index("embedding"), pa.field("embedding", nullable),
                             table.column("embedding").cast(nullable))
    pq.write_table(loose, path, compression="none", use_dictionary=False)
    assert fastread.page_ranges(pq.ParquetFile(path), 5, 2) is None
    np.testing.assert_array_equal(load_bags(root, "m", dtype=None).features, feats)


def test_float16_to_float32_cast_is_exact(monkeypatch) -> None:
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)  # all float16 bit patterns
    finite = every[np.isfinite(every)].reshape(-1, 2)
    monkeypatch.setattr(columns, "_TORCH_CAST_MIN", 0)
    for writeable in (True, False):  # torch path, then numpy path (torch needs writeable input)
        src = finite.copy()
        src.flags.writeable = writeable
        dest = np.empty(finite.shape, np.float32)
        columns._cast_into(dest, src)
        np.testing.assert_array_equal(dest, finite.astype(np.float32))
        assert np.array_equal(np.signbit(dest), np.signbit(finite))
