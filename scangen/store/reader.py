"""Read and validate store tables: slides, meta.json, per-model bags and registered tiles.

Loading hands back one flat (N, D) array plus offsets: the embedding column's values buffer is copied
chunk by chunk (no per-row Python loop). A slide subset reads only the row groups that hold it.
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
    StoreValidationError,
    embeddings_path,
    format_ids,
    meta_path,
    registered_path,
    slides_path,
)
from .validate import check_finite, validate_meta, validate_slides


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
    """slides.parquet of `store`, validated and with canonical column types."""
    path = slides_path(store)
    if not path.is_file():
        raise StoreValidationError(f"{path}: slides.parquet is missing")
    return validate_slides(pl.read_parquet(path), str(path))


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

    def read(self, bags: np.ndarray, columns: list[str], dtype: np.dtype | None):
        """Columns for bags `bags` (in that order): dict of numpy arrays plus the new offsets."""
        rows, new_offsets = gather_rows(self.offsets, bags)
        if isinstance(rows, slice):
            rows = np.arange(rows.start, rows.stop, dtype=np.int64)
        meta = self.file.metadata
        group_sizes = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], dtype=np.int64)
        group_starts = np.concatenate([[0], np.cumsum(group_sizes)])
        group_of_row = np.searchsorted(group_starts, rows, side="right") - 1
        groups = np.unique(group_of_row)
        read_starts = np.zeros(len(group_starts), dtype=np.int64)
        read_starts[groups] = np.concatenate([[0], np.cumsum(group_sizes[groups])[:-1]])
        local = rows - group_starts[group_of_row] + read_starts[group_of_row]
        contiguous = len(local) == 0 or (local[0] == 0 and np.all(np.diff(local) == 1)
                                         and local[-1] == group_sizes[groups].sum() - 1)
        row_slide = self.row_slide[
            np.concatenate([np.arange(group_starts[g], group_starts[g + 1]) for g in groups])
        ] if len(groups) else np.zeros(0, dtype=np.int64)
        small = [c for c in columns if c != "embedding"]
        table = self.file.read_row_groups(groups.tolist(), columns=small) if small else None
        out: dict[str, np.ndarray] = {}
        for name in small:
            col = table.column(name)
            check_no_nulls(col, name, row_slide, self.names, self.source)
            arr = int_array(col, name, np.int8 if name == "tissue_class" else np.int32, self.source)
            out[name] = arr if contiguous else arr[local]
        if "embedding" in columns:
            target = dtype if dtype is not None else embedding_dtype(self.schema)
            emb_type = self.schema.field("embedding").type
            arr = None
            if pa.types.is_fixed_size_list(emb_type):
                arr = read_fixed_embeddings(self.path, groups, group_sizes[groups], emb_type.list_size, target)
            if arr is None:  # variable-length lists or nulls: the exact path, with precise error messages
                col = self.file.read_row_groups(groups.tolist(), columns=["embedding"]).column("embedding")
                check_no_nulls(col, "embedding", row_slide, self.names, self.source)
                dim = embedding_dim(col, row_slide, self.names, self.source)
                arr = embedding_matrix(col, dim, target)
            out["embedding"] = arr if contiguous else arr[local]
        return out, new_offsets


def _check_patch_index(patch_index: np.ndarray, offsets: np.ndarray, ids: list[str], source: str) -> None:
    """patch_index must run 0..n_i-1 inside every bag (rows in patch order)."""
    expected = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))
    bad = np.flatnonzero(patch_index != expected)
    if bad.size:
        bags = np.unique(np.searchsorted(offsets, bad, side="right") - 1)
        raise StoreValidationError(
            f"{source}: column 'patch_index' is not 0..n-1 in row order for slide ids {format_ids([ids[b] for b in bags])}"
        )


def _wanted_slides(slides: pl.DataFrame, slide_ids: Sequence[str] | None, slides_source: str) -> pl.DataFrame:
    """Rows of `slides` for `slide_ids` in that order (all rows when None)."""
    if slide_ids is None:
        return slides
    wanted = list(slide_ids)
    if isinstance(slide_ids, str):
        raise StoreValidationError(f"slide_ids must be a sequence of slide ids, got the string {slide_ids!r}")
    dup = pl.Series(wanted, dtype=pl.String)
    if dup.is_duplicated().any():
        raise StoreValidationError(f"slide_ids requested twice: {format_ids(dup.filter(dup.is_duplicated()).unique().to_list())}")
    pos = {s: i for i, s in enumerate(slides["slide_id"].to_list())}
    missing = [s for s in wanted if s not in pos]
    if missing:
        raise StoreValidationError(f"{slides_source}: column 'slide_id' lacks requested slide ids {format_ids(missing)}")
    return slides[[pos[s] for s in wanted]]


def _check_dim(store: Path, fm: str, dim: int, source: str) -> None:
    meta = read_meta(store)
    known = meta["models"].get(fm)
    if known is None:
        raise StoreValidationError(f"{meta_path(store)}: key 'models' has no entry for model {fm!r} (has {sorted(meta['models'])})")
    if known != dim:
        raise StoreValidationError(f"{source}: column 'embedding' has dimension {dim} but {meta_path(store)} says models[{fm!r}] = {known}")


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
    _check_dim(store, fm, data["embedding"].shape[1], bag_file.source)
    _check_patch_index(data["patch_index"], offsets, ids, bag_file.source)
    check_finite(data["embedding"], offsets, ids, bag_file.source)
    coords = np.column_stack([data["x"], data["y"]]).astype(np.int32, copy=False)
    return Bags(chosen, data["embedding"], offsets, coords, data.get("tissue_class"))


def load_registered(store: Path, fm: str, slide_ids: Sequence[str] | None = None, dtype=np.float32) -> RegisteredBags:
    """Registered tiles of model `fm`: slides that have them, in slides.parquet order (or `slide_ids`)."""
    store = Path(store)
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
    columns = ["tile_id", "embedding"] + (["tissue_class"] if "tissue_class" in bag_file.schema.names else [])
    data, offsets = bag_file.read(bags, columns, _check_dtype(dtype))
    _check_dim(store, fm, data["embedding"].shape[1], bag_file.source)
    check_finite(data["embedding"], offsets, ids, bag_file.source)
    return RegisteredBags(chosen, data["embedding"], offsets, data["tile_id"], data.get("tissue_class"))
