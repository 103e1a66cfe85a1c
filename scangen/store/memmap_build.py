"""Building the memory-mapped cache (scangen.store.memmap): one streaming pass over the row groups.

Each row group is decoded (the same fast path and checks as `load_bags`), checked, converted to
float16 and appended to .npy files in a private folder; slide means are summed as slides complete.
Memory: one row group plus the pending rows of one slide, whatever the table's size. The caller
(memmap.ensure_cache) renames the folder into place only after this returns, so the folder rename
is the atomic step and no reader ever sees a partial cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from scangen.atomic import atomic_write_text

from .columns import check_no_nulls, int_array
from .reader import _BagFile, _check_dim, _meta_dim
from .schema import StoreValidationError, embeddings_path, format_ids
from .validate import check_finite

FORMAT_VERSION = 1
"""Bumped whenever the cache layout or its arithmetic changes (old caches are then rebuilt)."""
FLOAT16_MAX = float(np.finfo(np.float16).max)


def parquet_fingerprint(path: Path) -> dict:
    """Cheap identity of a Parquet file: size, mtime_ns, inode and a digest of its footer.

    Our writers replace files atomically (new inode, new mtime), and the footer records every row
    group's byte offsets and sizes, so any rewrite changes at least one of these.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        fh.seek(max(0, st.st_size - 8))
        tail = fh.read(8)
        footer_len = int.from_bytes(tail[:4], "little") if len(tail) == 8 and tail[4:] == b"PAR1" else 0
        fh.seek(max(0, st.st_size - 8 - footer_len))
        footer = fh.read(footer_len + 8)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "footer_blake2b": hashlib.blake2b(footer, digest_size=16).hexdigest()}


class _NpyWriter:
    """Appends rows to a .npy file of known shape, sequentially (no mapping, so memory stays flat)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.handle = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.handle, header)
        self.dtype, self.rows, self.expected = np.dtype(dtype), 0, shape[0]

    def append(self, rows: np.ndarray) -> None:
        np.ascontiguousarray(rows, dtype=self.dtype).tofile(self.handle)
        self.rows += len(rows)

    def close(self) -> None:
        if self.rows != self.expected:
            raise RuntimeError(f"{self.handle.name}: wrote {self.rows} rows, expected {self.expected}")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


class _SlideSums:
    """Per-slide float32 sums, fed row group by row group in file order.

    Each slide is summed by one `np.add.reduceat` over its complete rows upcast to float32, the
    exact operation Bags.mean_embeddings makes on an in-memory float32 array (numpy's reduction
    order inside a segment is its own, so a slide cut by a row-group edge waits, as float16 rows,
    until its last row arrives instead of carrying a partial sum). Memory: one row group plus the
    pending rows of one slide.
    """

    def __init__(self, offsets: np.ndarray, dim: int):
        self.offsets = offsets
        self.sums = np.zeros((len(offsets) - 1, dim), dtype=np.float32)
        self.pending: list[np.ndarray] = []
        self.start = 0  # first row of the pending slide (a slide start)

    def add(self, rows: np.ndarray) -> None:
        """Rows following those already added."""
        self.pending.append(np.array(rows, copy=True) if self.pending else rows)
        stop = self.start + sum(len(p) for p in self.pending)
        first = int(np.searchsorted(self.offsets, self.start, side="right") - 1)
        last = int(np.searchsorted(self.offsets, stop, side="right") - 1)  # slides first..last-1 are complete
        if last == first:
            if len(self.pending) == 1:
                self.pending = [np.array(rows, copy=True)]
            return
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        cut = int(self.offsets[last] - self.start)
        self.sums[first:last] = np.add.reduceat(block[:cut].astype(np.float32), self.offsets[first:last] - self.start, axis=0)
        self.pending = [np.array(block[cut:], copy=True)] if cut < len(block) else []
        self.start = int(self.offsets[last])


def build_cache(store: Path, fm: str, tmp: Path) -> None:
    """Decode, check and write the whole cache of `fm` into folder `tmp` (see module docstring)."""
    expected_dim = _meta_dim(store, fm)
    source_path = embeddings_path(store, fm)
    fingerprint = parquet_fingerprint(source_path)
    bag_file = _BagFile(source_path, ("patch_index", "x", "y"))
    meta = bag_file.file.metadata
    n_rows, names, offsets = int(meta.num_rows), bag_file.names, bag_file.offsets
    stored = np.dtype({"halffloat": "float16", "float": "float32"}[str(bag_file.schema.field("embedding").type.value_type)])
    has_tissue = "tissue_class" in bag_file.schema.names
    small = ["patch_index", "x", "y", *(["tissue_class"] if has_tissue else [])]
    feats = coords = tissue = None
    sums: _SlideSums | None = None
    start = 0
    for g in range(meta.num_row_groups):
        stop = start + meta.row_group(g).num_rows
        if stop == start:
            continue
        row_slide = bag_file.row_slide[start:stop]
        run_ids = [names[i] for i in np.unique(row_slide)]
        cols = _small_columns(bag_file, g, small, row_slide)
        local_offsets = np.concatenate([[0], np.flatnonzero(np.diff(row_slide)) + 1, [stop - start]]).astype(np.int64)
        bad = np.flatnonzero(cols["patch_index"] != np.arange(start, stop) - offsets[row_slide])
        if bad.size:
            raise StoreValidationError(
                f"{bag_file.source}: column 'patch_index' is not 0..n-1 in row order for slide ids "
                f"{format_ids([names[i] for i in np.unique(row_slide[bad])])}"
            )
        emb = bag_file._embeddings(np.array([g]), row_slide, stored)
        dim = emb.shape[1]
        if feats is None:
            _check_dim(store, fm, expected_dim, dim, bag_file.source)
            feats = _NpyWriter(tmp / "features.npy", (n_rows, dim), np.float16)
            coords = _NpyWriter(tmp / "coords.npy", (n_rows, 2), np.int32)
            tissue = _NpyWriter(tmp / "tissue_class.npy", (n_rows,), np.int8) if has_tissue else None
            sums = _SlideSums(offsets, dim)
        check_finite(emb, local_offsets, run_ids, bag_file.source)
        if stored != np.float16:
            _check_half_range(emb, local_offsets, run_ids, bag_file.source)
            emb = emb.astype(np.float16)
        feats.append(emb)
        coords.append(np.column_stack([cols["x"], cols["y"]]))
        if tissue is not None:
            tissue.append(cols["tissue_class"])
        sums.add(emb)
        start = stop
    if feats is None:
        raise StoreValidationError(f"{bag_file.source}: the table has no rows")
    for writer in (feats, coords, tissue):
        if writer is not None:
            writer.close()
    means = sums.sums / np.diff(offsets)[:, None].astype(np.float32)
    np.save(tmp / "offsets.npy", offsets.astype(np.int64))
    np.save(tmp / "means.npy", means.astype(np.float32, copy=False))
    info = {"format": FORMAT_VERSION, "source": source_path.name, "fingerprint": fingerprint,
            "stored_dtype": stored.name, "dim": int(dim), "rows": n_rows, "slide_ids": names}
    atomic_write_text(tmp / "cache.json", json.dumps(info))


def _small_columns(bag_file: _BagFile, group: int, names: list[str], row_slide: np.ndarray) -> dict[str, np.ndarray]:
    """The integer columns `names` of row group `group`, null-checked and narrowed like load_bags."""
    table = bag_file.file.read_row_group(group, columns=names)
    out = {}
    for name in names:
        col = table.column(name)
        check_no_nulls(col, name, row_slide, bag_file.names, bag_file.source)
        out[name] = int_array(col, name, np.int8 if name == "tissue_class" else np.int32, bag_file.source)
    return out


def _check_half_range(emb: np.ndarray, offsets: np.ndarray, ids: list[str], source: str) -> None:
    """float32 values the float16 cache cannot hold (|v| > 65504) raise naming the slides."""
    rows = np.flatnonzero(np.abs(emb).max(axis=1) > FLOAT16_MAX)
    if rows.size:
        bags = np.unique(np.searchsorted(offsets, rows, side="right") - 1)
        raise StoreValidationError(
            f"{source}: column 'embedding' has values beyond the float16 range (|v| > {FLOAT16_MAX:g}) that the "
            f"memory-mapped float16 cache cannot hold, in slide ids {format_ids([ids[b] for b in bags])}; "
            f"load with mmap=False"
        )
