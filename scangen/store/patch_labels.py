"""Per-patch labels (tissue class or any named patch label) for an import, from the feature files or a
side table, encoded as the store's int8 `tissue_class` column.

Side table (CSV or Parquet or a DataFrame): `slide_id`, then either `patch_index` (0..n-1 in the
feature file's row order) or `x`, `y` (level-0 coordinates as in the feature file), and the label
column. Every imported patch needs exactly one label; rows for other slides or patches are errors.
Integer labels in 0..127 are kept; text labels become codes 0..k-1 in sorted order and the class
names are recorded in meta.json (imports[<fm>]["patch_label"]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .schema import StoreValidationError, format_ids

MAX_CODE = 127


def read_side_table(table: Path | str | pl.DataFrame, label: str) -> tuple[pl.DataFrame, str]:
    """The side table with its key columns checked; (table, source name)."""
    if isinstance(table, pl.DataFrame):
        df, source = table, "patch label table"
    else:
        path = Path(table)
        if not path.is_file():
            raise StoreValidationError(f"{path}: patch label table not found")
        if path.suffix.lower() == ".csv":
            df = pl.read_csv(path, schema_overrides={"slide_id": pl.String})
        elif path.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        else:
            raise StoreValidationError(f"{path}: patch label table must be a .csv or .parquet file")
        source = str(path)
    keys = ["slide_id", "patch_index"] if "patch_index" in df.columns else ["slide_id", "x", "y"]
    missing = [c for c in (*keys, label) if c not in df.columns]
    if missing:
        raise StoreValidationError(
            f"{source}: missing column(s) {missing}; a patch label table needs slide_id, patch_index (or x and y) "
            f"and the label column {label!r}"
        )
    df = df.select(*keys, label).with_columns(pl.col("slide_id").cast(pl.String))
    dup = df.filter(pl.struct(keys).is_duplicated())
    if dup.height:
        raise StoreValidationError(
            f"{source}: columns {keys} repeat a patch (more than one label) in slide ids "
            f"{format_ids(sorted(set(dup['slide_id'].to_list())))}"
        )
    return df, source


def labels_from_table(table: pl.DataFrame, source: str, label: str, slide_ids: list[str],
                      offsets: np.ndarray, coords: np.ndarray | None) -> np.ndarray:
    """Label of every imported patch (rows in store order) looked up in the side table."""
    lengths = np.diff(offsets)
    rows = pl.DataFrame({
        "slide_id": np.repeat(np.asarray(slide_ids, dtype=object), lengths).astype(str),
        "patch_index": (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)).astype(np.int64),
    })
    if "patch_index" in table.columns:
        keys = ["slide_id", "patch_index"]
    else:
        if coords is None:
            raise StoreValidationError(f"{source}: keyed by x, y but the feature files have no coordinates; use patch_index")
        keys = ["slide_id", "x", "y"]
        rows = rows.with_columns(pl.Series("x", coords[:, 0]), pl.Series("y", coords[:, 1]))
    table = table.with_columns(pl.col(k).cast(rows.schema[k]) for k in keys if k != "slide_id")
    orphans = table.join(rows, on=keys, how="anti")
    if orphans.height:
        raise StoreValidationError(
            f"{source}: {orphans.height} rows match no imported patch (columns {keys}) in slide ids "
            f"{format_ids(sorted(set(orphans['slide_id'].to_list())))}"
        )
    joined = rows.join(table, on=keys, how="left", maintain_order="left")
    unlabelled = joined.filter(pl.col(label).is_null())
    if unlabelled.height:
        raise StoreValidationError(
            f"{source}: column {label!r} has no label for {unlabelled.height} patches in slide ids "
            f"{format_ids(sorted(set(unlabelled['slide_id'].to_list())))}"
        )
    return joined[label].to_numpy()


def encode(values: np.ndarray, label: str, source: str, slide_of_row: np.ndarray,
           slide_ids: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """(int8 codes, class names or None when the labels were integers already)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        bad = (values < 0) | (values > MAX_CODE)
        if bad.any():
            raise StoreValidationError(
                f"{source}: patch label {label!r} must be integers in 0..{MAX_CODE} (or text), got "
                f"{sorted(set(values[bad].tolist()))[:10]} in slide ids {format_ids(sorted({slide_ids[i] for i in slide_of_row[bad]}))}"
            )
        return values.astype(np.int8), None
    if values.dtype.kind == "f":
        raise StoreValidationError(f"{source}: patch label {label!r} must be integers or text, got floats")
    text = values.astype(str)
    classes = sorted(set(text.tolist()))
    if len(classes) > MAX_CODE + 1:
        raise StoreValidationError(f"{source}: patch label {label!r} has {len(classes)} classes; at most {MAX_CODE + 1}")
    codes = np.searchsorted(np.asarray(classes), text).astype(np.int8)
    return codes, classes
