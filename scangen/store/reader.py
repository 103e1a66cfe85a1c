"""Read and validate store tables: slides, meta.json, per-model bags and registered tiles.

Loading hands back one flat (N, D) array plus offsets, decoded row group by row group straight into
place (see columns.py / fastread.py; no per-row Python loop). A slide subset reads only the row
groups that hold it. Every table is validated on the way in (validate.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .bags import Bags, RegisteredBags, gather_rows
from .columns import (
    check_column_types,
    check_no_nulls,
    embedding_dim,
    embedding_dtype,
    embedding_matrix,
    int_array,
    read_fixed_embeddings,
)
from .schema import (
    EMBEDDINGS_DIR,
    LABEL_COLUMN,
    StoreValidationError,
    embeddings_path,
    format_ids,
    meta_path,
    registered_path,
    slides_path,
)
from .validate import check_finite, validate_meta, validate_slides
from .vocabulary import DEFAULT_TASK, task_of_meta


def read_meta(store: Path) -> dict:
    """meta.json of `store`, validated."""
    path = meta_path(store)
    if not path.is_file():
        raise StoreValidationError(f"{path}: meta.json is missing (every store needs one)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StoreValidationError(f"{path}: not valid JSON ({err})") from err
    return validate_meta(meta, str(path))


def read_slides(store: Path) -> pl.DataFrame:
    """slides.parquet of `store`, validated and with canonical column types.

    The task's column (named in meta.json, see `scangen.store.vocabulary.read_task_column`) is
    returned under the in-memory name `egfr` (all null in an embedding-only store).
    """
    path = slides_path(store)
    if not path.is_file():
        raise StoreValidationError(f"{path}: slides.parquet is missing")
    task = task_of_meta(read_meta(store)) if meta_path(store).is_file() else DEFAULT_TASK
    return validate_slides(label_to_memory(pl.read_parquet(path), task, str(path)), str(path),
                           has_task=task is not None, label_name=task or LABEL_COLUMN)


def label_to_memory(df: pl.DataFrame, task: str | None, source: str) -> pl.DataFrame:
    """The on-disk slides table with its task column renamed to the in-memory `egfr`."""
    if task is None or task == LABEL_COLUMN:
        return df
    if LABEL_COLUMN in df.columns:
        raise StoreValidationError(
            f"{source}: column {LABEL_COLUMN!r} is reserved for the task label in memory, but the task is "
            f"{task!r} and the table also has a column {LABEL_COLUMN!r}; rename that column"
        )
    if task not in df.columns:
        raise StoreValidationError(f"{source}: missing the task label column {task!r} named in meta.json")
    return df.rename({task: LABEL_COLUMN})


def list_models(store: Path) -> list[str]:
    """Names of the models with a patch-embedding table in `store`, sorted."""
    folder = Path(store) / EMBEDDINGS_DIR
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


class _BagFile:
    """One bag table on disk: its slide runs, read once, and row-group-aware column reads."""

    def __init__(self, path: Path, int_columns: tuple[str, ...]):
        if not path.is_file():
            raise StoreValidationError(f"{path}: file is missing")
        self.path, self.source = path, str(path)
        self.file = pq.ParquetFile(path, pre_buffer=False)
        self.schema = self.file.schema_arrow
        check_column_types(self.schema, int_columns, self.source)
        ids = pl.from_arrow(self.file.read(columns=["slide_id"]).column("slide_id")).cast(pl.String)
        if ids.null_count():
            raise StoreValidationError(f"{self.source}: column 'slide_id' has {ids.null_count()} null rows")
        runs = ids.rle()
        self.names: list[str] = runs.struct.field("value").to_list()
        lengths = runs.struct.field("len").to_numpy().astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        split = pl.Series(self.names)
        if split.is_duplicated().any():
            bad = split.filter(split.is_duplicated()).unique(maintain_order=True).to_list()
            raise StoreValidationError(
                f"{self.source}: column 'slide_id' rows are not contiguous for slide ids {format_ids(bad)}"
            )
        self.index = {name: i for i, name in enumerate(self.names)}
        self.row_slide = np.repeat(np.arange(len(self.names)), lengths)

    def bag_positions(self, slide_ids: Sequence[str], what: str) -> np.ndarray:
        """Run index of each wanted slide; missing ones raise listing them."""
        missing = [s for s in slide_ids if s not in self.index]
        if missing:
            raise StoreValidationError(f"{self.source}: no {what} for slide ids {format_ids(missing)}")
        return np.array([self.index[s] for s in slide_ids], dtype=np.int64)

    def _plan(self, bags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Which row groups to read for `bags`, and where the wanted rows sit among the rows read.

        Returns (groups, new offsets, local row positions or None when the rows read are exactly the
        wanted rows in order, bag number of every row read).
        """
        rows, new_offsets = gather_rows(self.offsets, bags)
        if isinstance(rows, slice):
            rows = np.arange(rows.start, rows.stop, dtype=np.int64)
        meta = self.file.metadata
        sizes = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        group_of_row = np.searchsorted(starts, rows, side="right") - 1
        groups = np.unique(group_of_row)
        read_start = np.zeros(len(starts), dtype=np.int64)
        read_start[groups] = np.concatenate([[0], np.cumsum(sizes[groups])[:-1]])
        local = rows - starts[group_of_row] + read_start[group_of_row]
        n_read = int(sizes[groups].sum())
        in_order = len(local) == n_read and bool(np.all(local == np.arange(n_read)))
        read_rows = [np.arange(starts[g], starts[g + 1]) for g in groups]
        row_slide = self.row_slide[np.concatenate(read_rows)] if read_rows else np.zeros(0, dtype=np.int64)
        return groups, new_offsets, None if in_order else local, row_slide

    def read(self, bags: np.ndarray, columns: list[str], dtype: np.dtype | None):
        """Columns for bags `bags` (in that order) as numpy arrays, plus the offsets of those bags."""
        groups, new_offsets, local, row_slide = self._plan(bags)
        small = [c for c in columns if c != "embedding"]
        out: dict[str, np.ndarray] = {}
        if small:
            table = self.file.read_row_groups(groups.tolist(), columns=small)
            for name in small:
                col = table.column(name)
                check_no_nulls(col, name, row_slide, self.names, self.source)
                out[name] = int_array(col, name, np.int8 if name == "tissue_class" else np.int32, self.source)
        if "embedding" in columns:
            out["embedding"] = self._embeddings(groups, row_slide, dtype)
        if local is not None:
            out = {name: arr[local] for name, arr in out.items()}
        return out, new_offsets

    def _embeddings(self, groups: np.ndarray, row_slide: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
        """The embedding rows of `groups` as one (rows, D) array in `dtype` (None: stored type)."""
        target = dtype if dtype is not None else embedding_dtype(self.schema)
        emb_type = self.schema.field("embedding").type
        if pa.types.is_fixed_size_list(emb_type):
            meta = self.file.metadata
            sizes = np.array([meta.row_group(int(g)).num_rows for g in groups], dtype=np.int64)
            stored = embedding_dtype(self.schema)
            arr = read_fixed_embeddings(self.path, groups, sizes, emb_type.list_size, stored, np.dtype(target))
            if arr is not None:
                return arr
        # variable-length lists, or nulls met: the exact path, whose errors name the slides
        col = self.file.read_row_groups(groups.tolist(), columns=["embedding"]).column("embedding")
        check_no_nulls(col, "embedding", row_slide, self.names, self.source)
        dim = embedding_dim(col, row_slide, self.names, self.source)
        return embedding_matrix(col, dim, target)


def _check_patch_index(patch_index: np.ndarray, offsets: np.ndarray, ids: list[str], source: str) -> None:
    """patch_index must run 0..n_i-1 inside every bag (rows in patch order)."""
    expected = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))
    bad = np.flatnonzero(patch_index != expected)
    if bad.size:
        bags = np.unique(np.searchsorted(offsets, bad, side="right") - 1)
        raise StoreValidationError(
            f"{source}: column 'patch_index' is not 0..n-1 in row order for slide ids "
            f"{format_ids([ids[b] for b in bags])}"
        )


def _wanted_slides(slides: pl.DataFrame, slide_ids: Sequence[str] | None, slides_source: str) -> pl.DataFrame:
    """Rows of `slides` for `slide_ids` in that order (all rows when None)."""
    if slide_ids is None:
        return slides
    if isinstance(slide_ids, str):
        raise StoreValidationError(f"slide_ids must be a sequence of slide ids, got the string {slide_ids!r}")
    wanted = pl.Series(list(slide_ids), dtype=pl.String)
    if wanted.is_duplicated().any():
        twice = wanted.filter(wanted.is_duplicated()).unique(maintain_order=True).to_list()
        raise StoreValidationError(f"slide_ids requested more than once: {format_ids(twice)}")
    pos = {s: i for i, s in enumerate(slides["slide_id"].to_list())}
    missing = [s for s in wanted if s not in pos]
    if missing:
        raise StoreValidationError(
            f"{slides_source}: column 'slide_id' lacks requested slide ids {format_ids(missing)}"
        )
    return slides[[pos[s] for s in wanted]]


def _meta_dim(store: Path, fm: str) -> int:
    """Embedding size D of model `fm` according to meta.json."""
    models = read_meta(store)["models"]
    if fm not in models:
        raise StoreValidationError(
            f"{meta_path(store)}: key 'models' has no entry for model {fm!r} (has {sorted(models)})"
        )
    return int(models[fm])


def _check_dim(store: Path, fm: str, expected: int, dim: int, source: str) -> None:
    if dim != expected:
        raise StoreValidationError(
            f"{source}: column 'embedding' has dimension {dim} but {meta_path(store)} says "
            f"models[{fm!r}] = {expected}"
        )


def _check_orphans(bag_file: _BagFile, slides: pl.DataFrame, store: Path, what: str) -> None:
    """Every slide id in a bag table must have a row in slides.parquet."""
    orphans = sorted(set(bag_file.names) - set(slides["slide_id"].to_list()))
    if orphans:
        raise StoreValidationError(
            f"{bag_file.source}: column 'slide_id' has {what} for slide ids missing from "
            f"{slides_path(store)} {format_ids(orphans)}"
        )


def _check_dtype(dtype) -> np.dtype | None:
    if dtype is None:
        return None
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise StoreValidationError(f"dtype must be a float type (float32, float16) or None, got {dt}")
    return dt


def load_bags(store: Path, fm: str, slide_ids: Sequence[str] | None = None, dtype=np.float32) -> Bags:
    """Bags of model `fm`, validated; all slides in slides.parquet order, or `slide_ids` in that order.

    dtype: float32 (default), float16, or None to keep the stored type.
    """
    store = Path(store)
    expected_dim = _meta_dim(store, fm)
    slides = read_slides(store)
    chosen = _wanted_slides(slides, slide_ids, str(slides_path(store)))
    bag_file = _BagFile(embeddings_path(store, fm), ("patch_index", "x", "y"))
    _check_orphans(bag_file, slides, store, "embeddings")
    ids = chosen["slide_id"].to_list()
    bags = bag_file.bag_positions(ids, "embeddings")
    columns = ["patch_index", "x", "y", "embedding"]
    if "tissue_class" in bag_file.schema.names:
        columns.append("tissue_class")
    data, offsets = bag_file.read(bags, columns, _check_dtype(dtype))
    _check_dim(store, fm, expected_dim, data["embedding"].shape[1], bag_file.source)
    _check_patch_index(data["patch_index"], offsets, ids, bag_file.source)
    check_finite(data["embedding"], offsets, ids, bag_file.source)
    coords = np.column_stack([data["x"], data["y"]]).astype(np.int32, copy=False)
    return Bags(chosen, data["embedding"], offsets, coords, data.get("tissue_class"),
                task_label=task_of_meta(read_meta(store)))


def load_registered(
    store: Path, fm: str, slide_ids: Sequence[str] | None = None, dtype=np.float32
) -> RegisteredBags:
    """Registered tiles of model `fm`: slides that have them, in slides.parquet order (or `slide_ids`)."""
    store = Path(store)
    expected_dim = _meta_dim(store, fm)
    slides = read_slides(store)
    bag_file = _BagFile(registered_path(store, fm), ("tile_id",))
    _check_orphans(bag_file, slides, store, "tiles")
    if slide_ids is None:
        present = set(bag_file.names)
        chosen = slides.filter(pl.col("slide_id").is_in(list(present)))
    else:
        chosen = _wanted_slides(slides, slide_ids, str(slides_path(store)))
    ids = chosen["slide_id"].to_list()
    bags = bag_file.bag_positions(ids, "registered tiles")
    columns = ["tile_id", "embedding"]
    if "tissue_class" in bag_file.schema.names:
        columns.append("tissue_class")
    data, offsets = bag_file.read(bags, columns, _check_dtype(dtype))
    _check_dim(store, fm, expected_dim, data["embedding"].shape[1], bag_file.source)
    check_finite(data["embedding"], offsets, ids, bag_file.source)
    return RegisteredBags(chosen, data["embedding"], offsets, data["tile_id"], data.get("tissue_class"))
