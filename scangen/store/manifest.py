"""A slide manifest (CSV, Parquet or a DataFrame; one file or several) -> the store's slides table.

Required columns: slide_id, specimen_id, scanner, magnification; the task's label column (any name,
e.g. `egfr`, `msi`, `kras`; binary 0/1, true/false, yes/no) unless the store is embedding-only;
optional: cohort (default "multiscanner"), site, split; extra columns are kept. Column names match
case-insensitively, with the synonyms of `MANIFEST_SYNONYMS`. Scanner names are free text (trimmed;
known aliases and a user alias map give one code per scanner: `scangen.store.vocabulary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from .schema import LABEL_COLUMN, StoreValidationError, format_ids
from .validate import validate_slides
from .vocabulary import DEFAULT_TASK, canonical_scanner, check_task_name

MANIFEST_SYNONYMS: dict[str, tuple[str, ...]] = {
    "slide_id": ("slide", "slide_name", "wsi", "wsi_id", "filename"),
    "specimen_id": ("specimen", "case_id", "block_id"),
    "scanner": ("scanner_id", "scanner_name"),
    "magnification": ("mag", "objective_power"),
    "cohort": (),
    "site": ("center", "tss"),
    "split": ("fold",),
}
"""Canonical manifest column -> other names accepted for it (case-insensitive)."""
EGFR_SYNONYMS: tuple[str, ...] = ("egfr", "egfr_status", "egfr_mutation", "label")
"""Columns taken as the `egfr` task when task="auto"."""
DEFAULT_COHORT = "multiscanner"
_TRUE, _FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")

ManifestInput = Path | str | pl.DataFrame | Sequence[Path | str | pl.DataFrame]


def _read_one(manifest: Path | str | pl.DataFrame, k: int) -> tuple[pl.DataFrame, str]:
    if isinstance(manifest, pl.DataFrame):
        return manifest, f"manifest DataFrame #{k}" if k else "manifest DataFrame"
    path = Path(manifest)
    if not path.is_file():
        raise StoreValidationError(f"{path}: manifest file not found")
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, infer_schema=False), str(path)  # all text: ids keep leading zeros
    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.read_parquet(path), str(path)
    raise StoreValidationError(f"{path}: manifest must be a .csv or .parquet file")


def manifest_source(manifest: ManifestInput) -> str:
    """How messages name the manifest(s): the file path(s), or 'manifest DataFrame'."""
    items = [manifest] if isinstance(manifest, (str, Path, pl.DataFrame)) else list(manifest)
    return " + ".join("manifest DataFrame" if isinstance(m, pl.DataFrame) else str(m) for m in items)


def read_manifests(manifest: ManifestInput) -> tuple[pl.DataFrame, str]:
    """One table from one or several manifests (same columns); a slide id in two files is an error."""
    items = [manifest] if isinstance(manifest, (str, Path, pl.DataFrame)) else list(manifest)
    if not items:
        raise StoreValidationError("manifest: no manifest given")
    frames, sources = [], []
    for k, item in enumerate(items):
        df, source = _read_one(item, k)
        frames.append(_canonical_names(df, source).with_columns(pl.lit(source).alias("_manifest")))
        sources.append(source)
    if len(frames) == 1:
        return frames[0].drop("_manifest"), sources[0]
    columns = [set(f.columns) for f in frames]
    if any(c != columns[0] for c in columns):
        raise StoreValidationError(f"manifests {sources}: must have the same columns, got {[sorted(c) for c in columns]}")
    both = pl.concat([f.select(frames[0].columns).with_columns(pl.all().cast(pl.String)) for f in frames])
    _check_duplicates_across(both)
    return both.drop("_manifest"), " + ".join(sources)


def _check_duplicates_across(table: pl.DataFrame) -> None:
    """A slide id listed in more than one manifest file is an error naming the files and ids."""
    per = table.group_by("slide_id").agg(pl.col("_manifest").unique().alias("files")).filter(pl.col("files").list.len() > 1)
    if per.height:
        files = sorted({f for fs in per["files"].to_list() for f in fs})
        raise StoreValidationError(
            f"manifests {files}: column 'slide_id' lists the same slide in several files: "
            f"{format_ids(sorted(per['slide_id'].to_list()))}"
        )


def _canonical_names(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Rename synonym columns to canonical names; two columns for one name is an error."""
    lower = {c.lower(): c for c in df.columns}
    renames: dict[str, str] = {}
    for canon, synonyms in MANIFEST_SYNONYMS.items():
        found = [lower[n] for n in (canon, *synonyms) if n in lower]
        if len(found) > 1:
            raise StoreValidationError(f"{source}: columns {found} all mean {canon!r}; keep one")
        if found and found[0] != canon:
            renames[found[0]] = canon
    return df.rename(renames)


def scanner_column(col: pl.Series, source: str, aliases: Mapping[str, str] | None = None) -> pl.Series:
    """Scanner names trimmed and mapped through `aliases` and the known alias table."""
    if col.dtype != pl.String:
        raise StoreValidationError(f"{source}: column 'scanner' must hold text, got {col.dtype}")
    return col.map_elements(lambda v: canonical_scanner(v, aliases), return_dtype=pl.String)


def _unparsed(col: pl.Series, parsed: pl.Series) -> list:
    """The distinct raw values of `col` that parsing turned into null (empty when all parsed)."""
    return col.filter(parsed.is_null() & col.is_not_null()).unique().to_list()


def magnification_column(col: pl.Series, source: str) -> pl.Series:
    """Integer magnification from integers or text such as '40x' or '20X'."""
    if col.dtype.is_integer():
        return col
    if col.dtype == pl.String:
        digits = col.str.strip_chars().str.to_lowercase().str.strip_suffix("x").str.strip_chars()
        parsed = digits.cast(pl.Int64, strict=False)
        if values := _unparsed(col, parsed):
            raise StoreValidationError(
                f"{source}: column 'magnification' has unreadable values {values}; expected positive integers like 40 or '40x'"
            )
        return parsed
    raise StoreValidationError(
        f"{source}: column 'magnification' must be an integer (or text like '40x'), got {col.dtype}"
    )


def binary_column(col: pl.Series, name: str, source: str) -> pl.Series:
    """Binary labels as integers from integers, booleans or text (0/1, true/false, yes/no)."""
    if col.dtype.is_integer():
        return col
    if col.dtype == pl.Boolean:
        return col.cast(pl.Int64)
    if col.dtype == pl.String:
        text = col.str.strip_chars().str.to_lowercase()
        mapping = {**{t: 1 for t in _TRUE}, **{f: 0 for f in _FALSE}}
        parsed = text.replace_strict(mapping, default=None, return_dtype=pl.Int64)
        if values := _unparsed(col, parsed):
            raise StoreValidationError(
                f"{source}: column {name!r} has values {values}; expected 0/1, true/false or yes/no"
            )
        return parsed
    raise StoreValidationError(f"{source}: column {name!r} must be binary (integer, boolean or text), got {col.dtype}")


def _task_column(df: pl.DataFrame, task: str | None, source: str) -> tuple[str | None, str | None]:
    """(task name, manifest column holding it); task "auto" takes an EGFR column or fails clearly."""
    lower = {c.lower(): c for c in df.columns}
    if task is None:
        return None, None
    if task == "auto":
        found = [lower[n] for n in EGFR_SYNONYMS if n in lower]
        if len(found) > 1:
            raise StoreValidationError(f"{source}: columns {found} all mean 'egfr'; keep one")
        if not found:
            raise StoreValidationError(
                f"{source}: no task label column (looked for {list(EGFR_SYNONYMS)}); pass task='<column>' naming "
                f"the binary slide label (e.g. 'msi'), or task=None for an embedding-only store"
            )
        return DEFAULT_TASK, found[0]
    check_task_name(task, source)
    if task.lower() not in lower:
        raise StoreValidationError(f"{source}: no column {task!r} for the task label; present: {df.columns}")
    return task, lower[task.lower()]


def manifest_to_slides(manifest: ManifestInput, task: str | None = "auto",
                       aliases: Mapping[str, str] | None = None,
                       default_cohort: str = DEFAULT_COHORT) -> tuple[pl.DataFrame, str | None]:
    """(validated slides table, task name) of a manifest; the label is the in-memory column `egfr`.

    task: the label column's name, "auto" (an EGFR column: egfr, egfr_status, egfr_mutation, label)
    or None (embedding-only: no slide label). aliases: the user's scanner alias map (name -> code).
    Slides are real (simulated = false); cohort defaults to `default_cohort`.
    """
    df, source = read_manifests(manifest)
    required = ["slide_id", "specimen_id", "scanner", "magnification"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreValidationError(f"{source}: missing manifest column(s) {missing}; present: {df.columns}")
    name, column = _task_column(df, task, source)
    if column is not None:
        if LABEL_COLUMN in df.columns and column != LABEL_COLUMN:
            raise StoreValidationError(
                f"{source}: column {LABEL_COLUMN!r} is reserved for the task label in memory but the task is "
                f"{name!r} (column {column!r}); rename or drop column {LABEL_COLUMN!r}"
            )
        df = df.rename({column: LABEL_COLUMN}).with_columns(binary_column(df[column], column, source).alias(LABEL_COLUMN))
    df = df.with_columns(
        pl.col("slide_id").cast(pl.String).str.strip_chars(),
        pl.col("specimen_id").cast(pl.String).str.strip_chars(),
        scanner_column(df["scanner"].cast(pl.String), source, aliases).alias("scanner"),
        magnification_column(df["magnification"], source).alias("magnification"),
    )
    if "cohort" not in df.columns:
        df = df.with_columns(pl.lit(default_cohort).alias("cohort"))
    slides = validate_slides(df.with_columns(pl.lit(False).alias("simulated")), source,
                             has_task=name is not None, label_name=column or LABEL_COLUMN)
    return slides, name
