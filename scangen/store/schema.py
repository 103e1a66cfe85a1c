"""Names and types of the on-disk store: files, columns, allowed values, and the error type.

Layout (see data/README.md):
    <store>/slides.parquet             one row per whole-slide image
    <store>/embeddings/<fm>.parquet    one row per patch, rows of one slide contiguous
    <store>/registered/<fm>.parquet    optional registered tiles (same tissue position in every scan)
    <store>/meta.json                  {"simulated": bool, "models": {fm: D}, "task": ..., ...}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import polars as pl

from scangen.constants import COHORTS

SLIDES_FILE = "slides.parquet"
META_FILE = "meta.json"
EMBEDDINGS_DIR = "embeddings"
REGISTERED_DIR = "registered"

SLIDE_STRING_COLUMNS: tuple[str, ...] = ("slide_id", "specimen_id", "cohort", "scanner")
"""Required, non-null string columns of slides.parquet."""
SLIDE_INT_COLUMNS: dict[str, pl.DataType] = {"magnification": pl.Int16(), "egfr": pl.Int8()}
"""Required, non-null integer columns and the width they are stored with."""
SLIDE_NULLABLE_STRING_COLUMNS: tuple[str, ...] = ("site", "split")
"""Optional string columns (added as all-null when absent)."""
SLIDE_BOOL_COLUMNS: tuple[str, ...] = ("simulated",)
SLIDE_COLUMNS: tuple[str, ...] = (
    *SLIDE_STRING_COLUMNS[:4],
    "magnification",
    "egfr",
    *SLIDE_NULLABLE_STRING_COLUMNS,
    "simulated",
)
"""Canonical column order of slides.parquet; extra columns follow, kept as they are."""

ALLOWED_VALUES: dict[str, tuple] = {
    "cohort": COHORTS,
    "egfr": (0, 1),
}
"""Closed value sets. Scanner names are free text and magnifications any positive integer: a store's
vocabulary comes from its data (scangen.store.vocabulary)."""
LABEL_COLUMN = "egfr"
"""In-memory name of the slide task label (on disk the column carries the task's own name, recorded in
meta.json["task"]["label_column"]); null everywhere in an embedding-only store."""

EMBEDDING_FLOAT_DTYPES = ("float16", "float32")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class StoreValidationError(ValueError):
    """A store file breaks the schema; the message names the file, the column and the ids."""


def format_ids(ids: Iterable[object], limit: int = 10) -> str:
    """Render offending ids for an error message: the first `limit`, then how many more."""
    ids = [str(i) for i in ids]
    shown = ", ".join(repr(i) for i in ids[:limit])
    more = f" ... and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"[{shown}{more}] ({len(ids)} in all)"


def check_model_name(fm: str) -> str:
    """A model name becomes a file name: letters, digits and ._+- only."""
    if not isinstance(fm, str) or not _MODEL_NAME.match(fm):
        raise StoreValidationError(
            f"model name {fm!r} must be a non-empty string of letters, digits and '._+-' "
            "(it names the file embeddings/<fm>.parquet)"
        )
    return fm


def slides_path(store: Path) -> Path:
    """Path of slides.parquet in `store`."""
    return Path(store) / SLIDES_FILE


def meta_path(store: Path) -> Path:
    """Path of meta.json in `store`."""
    return Path(store) / META_FILE


def embeddings_path(store: Path, fm: str) -> Path:
    """Path of the patch-embedding table of model `fm`."""
    return Path(store) / EMBEDDINGS_DIR / f"{check_model_name(fm)}.parquet"


def registered_path(store: Path, fm: str) -> Path:
    """Path of the registered-tile table of model `fm`."""
    return Path(store) / REGISTERED_DIR / f"{check_model_name(fm)}.parquet"
