"""Reading and writing the result files the paper reads: Parquet tables and JSON headline numbers.

Everything under `results/<set>/` goes through these functions, so every file is written atomically
(temporary file + `os.replace`), every table carries a `simulated` column and every JSON document a
top-level `simulated` flag. JSON is strict: NaN and infinities are written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl

from scangen.atomic import atomic_write_with


def to_jsonable(value: Any) -> Any:
    """Plain-JSON version of nested dicts/lists/tuples/numpy scalars; non-finite floats become None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a value of type {type(value).__name__} to a result JSON")


def write_json(results_dir: Path, name: str, payload: Mapping[str, Any], *, simulated: bool) -> Path:
    """Write `results_dir/<name>.json` with `simulated` set at the top level; returns the path."""
    doc = {"simulated": bool(simulated), **{k: v for k, v in payload.items() if k != "simulated"}}
    text = json.dumps(to_jsonable(doc), indent=1, allow_nan=False)
    return atomic_write_with(Path(results_dir) / f"{name}.json", lambda p: p.write_text(text + "\n"))


def read_json(results_dir: Path, name: str) -> dict[str, Any]:
    """Read `results_dir/<name>.json`; a clear error names the missing file and the notebook to run."""
    path = Path(results_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: result file not found; run the notebook that writes {name}.json first")
    return json.loads(path.read_text())


def write_table(results_dir: Path, name: str, table: pl.DataFrame, *, simulated: bool) -> Path:
    """Write `results_dir/<name>.parquet`, adding (or checking) its boolean `simulated` column."""
    if not isinstance(table, pl.DataFrame):
        raise TypeError(f"{name}: expected a polars DataFrame, got {type(table).__name__}")
    if "simulated" in table.columns:
        flags = table["simulated"].unique().to_list()
        if flags != [bool(simulated)] and table.height:
            raise ValueError(f"{name}: column 'simulated' holds {flags}, expected only {bool(simulated)}")
        table = table.with_columns(pl.col("simulated").cast(pl.Boolean))
    else:
        table = table.with_columns(pl.lit(bool(simulated)).alias("simulated"))
    return atomic_write_with(Path(results_dir) / f"{name}.parquet", lambda p: table.write_parquet(p))


def read_table(results_dir: Path, name: str) -> pl.DataFrame:
    """Read `results_dir/<name>.parquet` with a clear error when it is missing."""
    path = Path(results_dir) / f"{name}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: result table not found; run the notebook that writes it first")
    return pl.read_parquet(path)
