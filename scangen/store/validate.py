"""Boundary checks for store tables; every failure is a StoreValidationError naming file, column, ids.

Checks run on load (and on write where they are cheap): required columns and their types, allowed
values, unique slide ids, one EGFR label per specimen, finite embeddings, consistent offsets, and that
slides and embedding bags match one to one. Nothing is dropped silently: bad rows raise.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import polars as pl

from .schema import (
    ALLOWED_VALUES,
    LABEL_COLUMN,
    SLIDE_BOOL_COLUMNS,
    SLIDE_COLUMNS,
    SLIDE_INT_COLUMNS,
    SLIDE_NULLABLE_STRING_COLUMNS,
    SLIDE_STRING_COLUMNS,
    StoreValidationError,
    check_model_name,
    format_ids,
)
from .vocabulary import check_scanner_names, task_of_meta

_FINITE_CHUNK_BYTES = 64 << 20


def _string_column(df: pl.DataFrame, col: str, source: str, nullable: bool) -> pl.Series:
    """Return column `col` as String, accepting Categorical/Enum (and all-null when nullable)."""
    s = df[col]
    if s.dtype == pl.String:
        return s
    if isinstance(s.dtype, (pl.Categorical, pl.Enum)) or (nullable and s.dtype == pl.Null):
        return s.cast(pl.String)
    raise StoreValidationError(f"{source}: column {col!r} must be a string column, got {s.dtype}")


def validate_slides(df: pl.DataFrame, source: str, has_task: bool = True, label_name: str = LABEL_COLUMN) -> pl.DataFrame:
    """Check a slides table and return it with canonical types and column order (extras kept last).

    `source` names the file (or argument) in error messages. Integer columns of any width are
    accepted and narrowed after their values are checked; optional `site`/`split` are added as nulls.
    `has_task=False` (an embedding-only store): the label column may be absent and must be all null.
    `label_name` is the task's own column name (on disk), used in messages about the label column.
    """
    shown = {LABEL_COLUMN: label_name}
    if not isinstance(df, pl.DataFrame):
        raise StoreValidationError(f"{source}: expected a polars DataFrame, got {type(df).__name__}")
    if not has_task:
        df = _without_task(df, source)
    required = (*SLIDE_STRING_COLUMNS, *SLIDE_INT_COLUMNS, *SLIDE_BOOL_COLUMNS)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreValidationError(
            f"{source}: missing required column(s) {missing}; present: {df.columns}"
        )
    out: dict[str, pl.Series] = {}
    for col in SLIDE_STRING_COLUMNS:
        out[col] = _string_column(df, col, source, nullable=False)
    for col in SLIDE_NULLABLE_STRING_COLUMNS:
        if col in df.columns:
            out[col] = _string_column(df, col, source, nullable=True)
        else:
            out[col] = pl.Series(col, [None] * df.height, dtype=pl.String)
    for col in SLIDE_INT_COLUMNS:
        if not df[col].dtype.is_integer():
            raise StoreValidationError(
                f"{source}: column {shown.get(col, col)!r} must be an integer column, got {df[col].dtype}"
            )
        out[col] = df[col]
    for col in SLIDE_BOOL_COLUMNS:
        if df[col].dtype != pl.Boolean:
            raise StoreValidationError(f"{source}: column {col!r} must be boolean, got {df[col].dtype}")
        out[col] = df[col]

    ids = out["slide_id"]
    for col in (*SLIDE_STRING_COLUMNS, *SLIDE_INT_COLUMNS, *SLIDE_BOOL_COLUMNS):
        if col == LABEL_COLUMN and not has_task:
            continue
        nulls = out[col].is_null()
        if nulls.any():
            where = ids.filter(nulls).fill_null("<null slide_id>").to_list()
            raise StoreValidationError(
                f"{source}: column {shown.get(col, col)!r} has nulls for slide ids {format_ids(where)}"
            )
    dup = ids.filter(ids.is_duplicated()).unique(maintain_order=True).to_list()
    if dup:
        raise StoreValidationError(f"{source}: column 'slide_id' has duplicate ids {format_ids(dup)}")
    check_scanner_names(out["scanner"], ids, source)
    bad_mag = out["magnification"] <= 0
    if bad_mag.any():
        raise StoreValidationError(
            f"{source}: column 'magnification' must hold positive integers, got "
            f"{sorted(set(out['magnification'].filter(bad_mag).to_list()))} for slide ids {format_ids(ids.filter(bad_mag).to_list())}"
        )
    for col, allowed in ALLOWED_VALUES.items():
        if col == LABEL_COLUMN and not has_task:
            continue
        bad = ~out[col].is_in(list(allowed))
        if bad.any():
            values = sorted({str(v) for v in out[col].filter(bad).to_list()})
            raise StoreValidationError(
                f"{source}: column {shown.get(col, col)!r} has values {values} outside {list(allowed)} "
                f"for slide ids {format_ids(ids.filter(bad).to_list())}"
            )
    labels = pl.DataFrame({"specimen_id": out["specimen_id"], "egfr": out["egfr"]})
    conflict = labels.group_by("specimen_id").agg(pl.col("egfr").n_unique().alias("n")).filter(pl.col("n") > 1)
    if conflict.height:
        specs = sorted(conflict["specimen_id"].to_list())
        raise StoreValidationError(
            f"{source}: column {label_name!r} (the task label) gives conflicting labels within specimen ids "
            f"{format_ids(specs)}"
        )
    for col, dtype in SLIDE_INT_COLUMNS.items():
        out[col] = out[col].cast(dtype)
    extras = [df[c] for c in df.columns if c not in SLIDE_COLUMNS]
    return pl.DataFrame([out[c].alias(c) for c in SLIDE_COLUMNS] + extras)


def _without_task(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """An embedding-only table: the label column added as all-null Int8, or checked to be all null."""
    if LABEL_COLUMN not in df.columns:
        return df.with_columns(pl.lit(None, dtype=pl.Int8).alias(LABEL_COLUMN))
    labelled = df[LABEL_COLUMN].is_not_null()
    if labelled.any():
        raise StoreValidationError(
            f"{source}: the store has no task (meta.json \"task\": null) but column {LABEL_COLUMN!r} holds labels "
            f"for slide ids {format_ids(df['slide_id'].filter(labelled).to_list())}"
        )
    return df.with_columns(pl.col(LABEL_COLUMN).cast(pl.Int8))


def validate_meta(meta: Mapping, source: str) -> dict:
    """Check meta.json content: 'simulated' bool and 'models' mapping model name -> positive int D."""
    if not isinstance(meta, Mapping):
        raise StoreValidationError(f"{source}: meta must be a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("simulated"), bool):
        raise StoreValidationError(f"{source}: key 'simulated' must be true or false, got {meta.get('simulated')!r}")
    models = meta.get("models")
    if not isinstance(models, Mapping):
        raise StoreValidationError(f"{source}: key 'models' must map model name -> embedding size D")
    for fm, dim in models.items():
        check_model_name(fm)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise StoreValidationError(f"{source}: models[{fm!r}] must be a positive integer D, got {dim!r}")
    try:
        task_of_meta(meta)
    except StoreValidationError as err:
        raise StoreValidationError(f"{source}: {err}") from err
    return dict(meta)


def check_offsets(offsets: np.ndarray, n_slides: int, n_rows: int, source: str) -> np.ndarray:
    """Offsets must be (n_slides + 1,) integers from 0 to n_rows, strictly increasing (no empty bag)."""
    off = np.asarray(offsets)
    if off.ndim != 1 or not np.issubdtype(off.dtype, np.integer):
        raise StoreValidationError(f"{source}: offsets must be a 1-D integer array, got {off.dtype} {off.shape}")
    if len(off) != n_slides + 1:
        raise StoreValidationError(f"{source}: offsets has {len(off)} entries, expected {n_slides + 1}")
    if off[0] != 0 or off[-1] != n_rows:
        raise StoreValidationError(f"{source}: offsets must run from 0 to {n_rows}, got {off[0]}..{off[-1]}")
    if np.any(np.diff(off) < 0):
        raise StoreValidationError(f"{source}: offsets must be non-decreasing")
    return off.astype(np.int64, copy=False)


def empty_bags(offsets: np.ndarray, slide_ids: Sequence[str]) -> list[str]:
    """Slide ids whose bag has no rows."""
    return [slide_ids[i] for i in np.flatnonzero(np.diff(offsets) == 0)]


def _chunk_has_nonfinite(chunk: np.ndarray, out: np.ndarray | None = None) -> bool:
    """Cheap test for any NaN/inf in a chunk; a True is then located exactly with np.isfinite.

    float16: NaN/inf are exactly the values whose 5 exponent bits are all ones, tested on the raw
    bits (numpy converts float16 to float32 slowly). float32: a float32 sum is finite unless an
    element is non-finite or the sum overflows.
    """
    if chunk.dtype == np.float16:
        bits = chunk.reshape(-1).view(np.uint16)
        scratch = np.empty_like(bits) if out is None else out[: bits.size]
        np.bitwise_and(bits, 0x7C00, out=scratch)
        return int(scratch.max(initial=0)) == 0x7C00
    return not np.isfinite(np.sum(chunk, dtype=np.float32))


def nonfinite_rows(features: np.ndarray) -> np.ndarray:
    """Row numbers holding NaN or inf, scanned in chunks so memory stays bounded."""
    bad: list[np.ndarray] = []
    step = max(1, _FINITE_CHUNK_BYTES // max(1, features.itemsize * features.shape[1]))
    scratch = np.empty(step * features.shape[1], dtype=np.uint16) if features.dtype == np.float16 else None
    for start in range(0, len(features), step):
        chunk = np.ascontiguousarray(features[start : start + step])
        if not _chunk_has_nonfinite(chunk, scratch):
            continue
        rows = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        if rows.size:
            bad.append(rows + start)
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_finite(features: np.ndarray, offsets: np.ndarray, slide_ids: Sequence[str], source: str) -> None:
    """Raise naming the slides whose embeddings hold NaN or inf."""
    rows = nonfinite_rows(features)
    if rows.size:
        bags = np.unique(np.searchsorted(offsets, rows, side="right") - 1)
        raise StoreValidationError(
            f"{source}: column 'embedding' has NaN or inf values ({rows.size} patch rows) in slide ids "
            f"{format_ids([slide_ids[b] for b in bags])}"
        )
