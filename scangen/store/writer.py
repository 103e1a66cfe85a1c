"""Write store tables: slides, per-model patch embeddings, registered tiles and meta.json.

Parquet layout chosen for read speed of large float arrays: the embedding column is a
FixedSizeList<float16|float32>[D] of non-nullable values written without dictionary encoding, with
BYTE_STREAM_SPLIT and no compression or statistics (float noise barely compresses), in row groups of
about 128 MiB and 1 MiB pages: the layout `fastread` decodes with numpy. Every file is replaced
atomically (temporary file + os.replace).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_open, atomic_write_json
from .schema import (
    EMBEDDING_FLOAT_DTYPES,
    LABEL_COLUMN,
    StoreValidationError,
    check_model_name,
    embeddings_path,
    format_ids,
    meta_path,
    registered_path,
    slides_path,
)
from .validate import (
    check_finite,
    check_offsets,
    empty_bags,
    validate_meta,
    validate_slides,
)
from .vocabulary import DEFAULT_TASK, check_task_name, task_of_meta

ROW_GROUP_BYTES = 128 << 20
"""Target size of one row group of the embedding column."""
DATA_PAGE_BYTES = 1 << 20
"""Target size of one data page."""
EMBEDDING_LEAF = "embedding.list.element"
"""Parquet leaf path of the embedding values (the FixedSizeList child)."""


def _write_parquet(table: pa.Table, target: Path, **options) -> Path:
    """Write `table` to `target` atomically with pyarrow (looked up at call time, so tests can patch it)."""
    with atomic_open(target) as handle:
        pq.write_table(table, handle, **options)
    return Path(target)


_FROM_META = "<from meta.json>"


def write_slides(store: Path, slides: pl.DataFrame, task: str | None = _FROM_META) -> Path:
    """Validate and write `<store>/slides.parquet`; returns its path.

    The in-memory label column `egfr` is written under the task's name: `task` (None: an
    embedding-only store, no label column), by default the one in meta.json ("egfr" without one).
    """
    target = slides_path(store)
    if task == _FROM_META:
        task = task_of_meta(_existing_meta(meta_path(store))) if meta_path(store).is_file() else DEFAULT_TASK
    if task is not None:
        check_task_name(task, f"slides table for {target}")
    canonical = validate_slides(slides, f"slides table for {target}", has_task=task is not None,
                                label_name=task or LABEL_COLUMN)
    if task is None:
        canonical = canonical.drop(LABEL_COLUMN)
    elif task != LABEL_COLUMN:
        if task in canonical.columns:
            raise StoreValidationError(
                f"slides table for {target}: has an extra column {task!r}, the name the task label "
                f"({LABEL_COLUMN!r} in memory) is written under; rename it"
            )
        canonical = canonical.rename({LABEL_COLUMN: task})
    table = canonical.to_arrow(compat_level=pl.CompatLevel.oldest())
    return _write_parquet(table, target, compression="zstd")


def write_meta(store: Path, meta: Mapping) -> Path:
    """Validate and write `<store>/meta.json` ({"simulated": bool, "models": {fm: D}, ...})."""
    target = meta_path(store)
    return atomic_write_json(target, validate_meta(meta, str(target)))


def _check_ids(slide_ids: Sequence[str], source: str) -> list[str]:
    ids = list(slide_ids)
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise StoreValidationError(f"{source}: slide ids must be non-empty strings, got {format_ids(bad)}")
    seen: set[str] = set()
    dup = sorted({i for i in ids if i in seen or seen.add(i)})
    if dup:
        raise StoreValidationError(f"{source}: column 'slide_id' has duplicate ids {format_ids(dup)}")
    return ids


def _check_features(features: np.ndarray, source: str) -> np.ndarray:
    if not isinstance(features, np.ndarray) or features.ndim != 2 or features.shape[1] == 0:
        shape = getattr(features, "shape", None)
        raise StoreValidationError(f"{source}: features must be an (N, D) numpy array with D > 0, got shape {shape}")
    if features.dtype.name not in EMBEDDING_FLOAT_DTYPES:
        raise StoreValidationError(
            f"{source}: features must be float16 or float32, got {features.dtype} (cast explicitly)"
        )
    return np.ascontiguousarray(features)


def _int_column(arr: np.ndarray | None, name: str, shape: tuple, dtype: type, source: str) -> np.ndarray:
    """Check an integer per-row array has `shape` and fits `dtype`; return it cast to `dtype`."""
    arr = np.asarray(arr)
    if arr.shape != shape or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise StoreValidationError(
            f"{source}: {name} must be an integer array of shape {shape}, got {arr.dtype} {arr.shape}"
        )
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise StoreValidationError(f"{source}: {name} values must fit {np.dtype(dtype).name}")
    return arr.astype(dtype, copy=False)


def _tissue(tissue_class: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    return None if tissue_class is None else _int_column(tissue_class, "tissue_class", (n,), np.int8, source)


def _meta_models(path: Path) -> dict:
    """The `models` mapping of an existing meta.json; a malformed file is a StoreValidationError."""
    meta = _existing_meta(path)
    models = meta.get("models", {})
    if not isinstance(models, dict):
        raise StoreValidationError(f"{path}: 'models' must be an object {{fm: D}}, got {type(models).__name__}")
    return models


def _existing_meta(path: Path) -> dict:
    """An existing meta.json as a dict; a malformed file is a StoreValidationError."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreValidationError(
            f"{path}: not valid JSON ({err}); expected an object like "
            '{"simulated": bool, "models": {fm: D}, ...}'
        ) from err
    if not isinstance(meta, dict):
        raise StoreValidationError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    return meta


def _check_meta_dim(store: Path, fm: str, dim: int, source: str) -> None:
    """If meta.json exists and lists `fm`, its D must equal `dim`."""
    path = meta_path(store)
    if path.exists():
        known = _meta_models(path).get(fm)
        if known is not None and known != dim:
            raise StoreValidationError(
                f"{source}: embedding dimension {dim} differs from {path} models[{fm!r}] = {known}"
            )


def _embedding_column(features: np.ndarray) -> pa.FixedSizeListArray:
    """FixedSizeList<float>[D] with non-nullable elements (cheaper definition levels to decode)."""
    flat = pa.array(features.reshape(-1))
    list_type = pa.list_(pa.field("element", flat.type, nullable=False), features.shape[1])
    return pa.FixedSizeListArray.from_arrays(flat, type=list_type)


def _bag_table(
    slide_ids: list[str], offsets: np.ndarray, features: np.ndarray, extra: dict[str, np.ndarray]
) -> pa.Table:
    """Arrow table: slide_id repeated per row, then `extra` integer columns, then the embedding."""
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(len(slide_ids), dtype=np.int32), lengths)
    columns = {"slide_id": pa.array(slide_ids, type=pa.string()).take(pa.array(owner))}
    columns.update({k: pa.array(v) for k, v in extra.items() if k != "tissue_class"})
    columns["embedding"] = _embedding_column(features)
    if extra.get("tissue_class") is not None:
        columns["tissue_class"] = pa.array(extra["tissue_class"])
    schema = pa.schema([pa.field(name, arr.type, nullable=False) for name, arr in columns.items()])
    return pa.table(list(columns.values()), schema=schema)


def _write_bag_table(table: pa.Table, target: Path, row_bytes: int) -> Path:
    rows_per_group = max(1024, ROW_GROUP_BYTES // max(1, row_bytes))
    small = [c for c in table.column_names if c != "embedding"]
    return _write_parquet(
        table,
        target,
        row_group_size=rows_per_group,
        use_dictionary=["slide_id"],
        use_byte_stream_split=[EMBEDDING_LEAF],
        compression={**{c: "zstd" for c in small}, EMBEDDING_LEAF: "none"},
        write_statistics=small,
        data_page_size=DATA_PAGE_BYTES,
    )


def _prepare(store, fm, slide_ids, offsets, features, target: Path):
    source = str(target)
    check_model_name(fm)
    ids = _check_ids(slide_ids, source)
    features = _check_features(features, source)
    off = check_offsets(offsets, len(ids), len(features), source)
    empty = empty_bags(off, ids)
    if empty:
        raise StoreValidationError(f"{source}: slide ids without embeddings (empty bags) {format_ids(empty)}")
    check_finite(features, off, ids, source)
    _check_meta_dim(Path(store), fm, features.shape[1], source)
    return source, ids, features, off


def write_embeddings(
    store: Path,
    fm: str,
    slide_ids: Sequence[str],
    offsets: np.ndarray,
    features: np.ndarray,
    coords: np.ndarray,
    tissue_class: np.ndarray | None = None,
) -> Path:
    """Write `<store>/embeddings/<fm>.parquet`: bag i = rows offsets[i]:offsets[i+1] of slide_ids[i].

    features (N, D) float16|float32; coords (N, 2) integer level-0 (x, y); tissue_class (N,) or None.
    patch_index is written as 0..n_i-1 within each slide.
    """
    target = embeddings_path(store, fm)
    source, ids, features, off = _prepare(store, fm, slide_ids, offsets, features, target)
    n = len(features)
    xy = _int_column(coords, "coords", (n, 2), np.int32, source)
    extra = {
        "patch_index": (np.arange(n, dtype=np.int64) - np.repeat(off[:-1], np.diff(off))).astype(np.int32),
        "x": np.ascontiguousarray(xy[:, 0]),
        "y": np.ascontiguousarray(xy[:, 1]),
        "tissue_class": _tissue(tissue_class, n, source),
    }
    table = _bag_table(ids, off, features, extra)
    return _write_bag_table(table, target, features.shape[1] * features.itemsize)


def write_registered(
    store: Path,
    fm: str,
    slide_ids: Sequence[str],
    offsets: np.ndarray,
    features: np.ndarray,
    tile_id: np.ndarray,
    tissue_class: np.ndarray | None = None,
) -> Path:
    """Write `<store>/registered/<fm>.parquet` (tile_id (N,) int32: same id = same tissue position)."""
    target = registered_path(store, fm)
    source, ids, features, off = _prepare(store, fm, slide_ids, offsets, features, target)
    n = len(features)
    extra = {
        "tile_id": _int_column(tile_id, "tile_id", (n,), np.int32, source),
        "tissue_class": _tissue(tissue_class, n, source),
    }
    table = _bag_table(ids, off, features, extra)
    return _write_bag_table(table, target, features.shape[1] * features.itemsize)
