"""Arrow → numpy conversion of bag-table columns without per-row Python loops.

The embedding column becomes one flat (N, D) array: row groups are decoded in parallel straight
into a preallocated array, by `fastread` (numpy, for our writer's layout) or from each chunk's
FixedSizeList child values buffer (pyarrow, any other layout). Integer columns are range-checked and
narrowed.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import fastread
from .schema import EMBEDDING_FLOAT_DTYPES, StoreValidationError, format_ids

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())
READ_WORKERS = min(4, os.cpu_count() or 1)
"""Threads decoding embedding row groups in parallel (the result does not depend on it)."""
_TORCH_CAST_MIN = 1 << 24
FAST_PATH = True
"""Decode our writer's own layout with numpy (scangen.store.fastread); False forces pyarrow."""


def check_column_types(schema: pa.Schema, int_columns: tuple[str, ...], source: str) -> None:
    """Required columns exist with the right kinds: slide_id string, integers, list-of-float embedding."""
    required = ("slide_id", *int_columns, "embedding")
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise StoreValidationError(f"{source}: missing required column(s) {missing}; present: {schema.names}")
    sid = schema.field("slide_id").type
    if pa.types.is_dictionary(sid):
        sid = sid.value_type
    if sid not in _STRING_TYPES:
        raise StoreValidationError(f"{source}: column 'slide_id' must be a string column, got {sid}")
    for col in (*int_columns, *(["tissue_class"] if "tissue_class" in schema.names else [])):
        if not pa.types.is_integer(schema.field(col).type):
            raise StoreValidationError(
                f"{source}: column {col!r} must be an integer column, got {schema.field(col).type}"
            )
    emb = schema.field("embedding").type
    if not _is_list(emb) or str(emb.value_type) not in {"halffloat", "float"}:
        raise StoreValidationError(
            f"{source}: column 'embedding' must be a FixedSizeList of float16 or float32, got {emb}"
        )


def embedding_dtype(schema: pa.Schema) -> np.dtype:
    """numpy dtype of the stored embedding values (float16 or float32)."""
    name = {"halffloat": "float16", "float": "float32"}[str(schema.field("embedding").type.value_type)]
    assert name in EMBEDDING_FLOAT_DTYPES
    return np.dtype(name)


def embedding_dim(column: pa.ChunkedArray, row_slide: np.ndarray, slide_names: list[str], source: str) -> int:
    """The single embedding length D of the column; mixed lengths raise naming the slide ids.

    `row_slide` maps each row to an index into `slide_names` (for error messages).
    """
    if pa.types.is_fixed_size_list(column.type):
        return int(column.type.list_size)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        return 0
    values, counts = np.unique(lengths, return_counts=True)
    if len(values) > 1:
        common = values[np.argmax(counts)]
        odd = np.unique(row_slide[lengths != common])
        raise StoreValidationError(
            f"{source}: column 'embedding' has mixed dimensions {sorted(int(v) for v in values)}; "
            f"slide ids whose rows differ from D = {int(common)}: {format_ids([slide_names[i] for i in odd])}"
        )
    return int(values[0])


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def check_no_nulls(
    column: pa.ChunkedArray, name: str, row_slide: np.ndarray, slide_names: list[str], source: str
) -> None:
    """Raise naming the slides whose rows of `name` are null (list columns: also null elements)."""
    bad = column.null_count > 0
    nested = _is_list(column.type)
    if nested and not bad:
        bad = any(chunk.flatten().null_count > 0 for chunk in column.chunks)
    if not bad:
        return
    mask = pc.is_null(column).to_numpy(zero_copy_only=False)
    if nested:
        mask = mask | _rows_with_null_elements(column)
    rows = np.flatnonzero(mask)
    ids = [slide_names[i] for i in np.unique(row_slide[rows])]
    raise StoreValidationError(f"{source}: column {name!r} has null values in slide ids {format_ids(ids)}")


def _rows_with_null_elements(column: pa.ChunkedArray) -> np.ndarray:
    """Boolean per row: the list holds at least one null element."""
    parts = []
    for chunk in column.chunks:
        valid = chunk.flatten().is_valid().to_numpy(zero_copy_only=False)
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        invalid = (~valid).astype(np.int64)
        if len(invalid):
            counts = np.add.reduceat(invalid, np.minimum(starts, len(invalid) - 1))
        else:
            counts = np.zeros(len(chunk), np.int64)
        counts = np.where(lengths > 0, counts, 0)
        parts.append(counts > 0)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def embedding_matrix(column: pa.ChunkedArray, dim: int, dtype: np.dtype) -> np.ndarray:
    """Flat (N, dim) array in `dtype` from a list column, one bulk copy (and cast) per chunk."""
    out = np.empty((len(column), dim), dtype=dtype)
    row = 0
    for chunk in column.chunks:
        n = len(chunk)
        if n == 0:
            continue
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        out[row : row + n] = values.reshape(n, dim)
        row += n
    return out


def int_array(column: pa.ChunkedArray, name: str, dtype: type, source: str) -> np.ndarray:
    """Integer column as numpy `dtype`, raising if a value does not fit."""
    arr = column.to_numpy()
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise StoreValidationError(f"{source}: column {name!r} has values outside the {np.dtype(dtype).name} range")
    return arr.astype(dtype, copy=False)


def _cast_into(dest: np.ndarray, src: np.ndarray) -> None:
    """dest[...] = src with a dtype change; float16 -> float32 goes through torch (exact, and about
    10x faster than numpy's conversion loop) when torch is loaded already or the block is large
    enough to repay importing it."""
    fast = src.flags.writeable and ("torch" in sys.modules or src.size >= _TORCH_CAST_MIN)
    if src.dtype == np.float16 and dest.dtype == np.float32 and fast:
        import torch

        torch.from_numpy(dest).copy_(torch.from_numpy(src))
    else:
        dest[...] = src


def read_fixed_embeddings(
    path: Path, groups: np.ndarray, sizes: np.ndarray, dim: int, stored: np.dtype, dtype: np.dtype
) -> np.ndarray | None:
    """Read a FixedSizeList embedding column, row groups in parallel, into one (rows, dim) array.

    Each worker decodes one row group straight into its slice of the output (through the numpy fast
    path of `fastread` when the file has our writer's layout, else pyarrow's flat values buffer), so
    peak memory is the output plus one row group per worker. Returns None when a null is met (the
    caller then takes the exact path that names the slides).
    """
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    out = np.empty((int(starts[-1]), dim), dtype=dtype)
    ranges = fastread.page_ranges(pq.ParquetFile(path), dim, stored.itemsize) if FAST_PATH else None

    def one(k: int) -> bool:
        rows = out[starts[k] : starts[k + 1]]
        if ranges is not None:
            offset, length = ranges[int(groups[k])]
            target = rows if dtype == stored else np.empty(rows.shape, dtype=stored)
            if fastread.read_chunk(path, offset, length, target):
                if target is not rows:
                    _cast_into(rows, target)
                return True
        handle = pq.ParquetFile(path, pre_buffer=False)
        col = handle.read_row_group(int(groups[k]), columns=["embedding"], use_threads=False).column(0)
        row = 0
        for chunk in col.chunks:
            values = chunk.flatten()
            if chunk.null_count or values.null_count:
                return False
            n = len(chunk)
            rows[row : row + n] = values.to_numpy(zero_copy_only=False).reshape(n, dim)
            row += n
        return True

    workers = min(len(groups), READ_WORKERS)
    if workers <= 1:
        ok = all([one(k) for k in range(len(groups))])
    else:
        with ThreadPoolExecutor(workers) as pool:
            ok = all(list(pool.map(one, range(len(groups)))))
    return out if ok else None
