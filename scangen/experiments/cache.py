"""On-disk cache of finished training runs, keyed by a hash of everything that determines the run.

A run's key hashes (1) its training configuration (every result-relevant field, as plain JSON, plus the
resolved device and, on CPU, the torch thread count: both change the rounding), (2) a fingerprint of
the store it reads (meta.json, slides.parquet and the FM's embeddings file, by content), and (3) a
fingerprint of the code that produces the run (the import closure of the training entry points and
the torch/numpy versions; `scangen.experiments.code_fingerprint`). Rerunning a notebook with unchanged
inputs therefore reuses finished training; changing any of the three trains again. One folder per key:

    <cache>/<key>/run.json             config, fingerprints, diagnostics (NaN stored as null),
                                       train_seconds (wall time / members of the group it trained in),
                                       group_size, group_seconds, n_rows
    <cache>/<key>/history.parquet      one row per evaluation (RunRecord.history)
    <cache>/<key>/predictions.parquet  the run's predictions (RunRecord.predictions), written last

Every file is written to a temporary name and moved into place with `os.replace`, predictions last, so
a half-written entry is never read back as finished (a record counts only when all three files exist).
The cache never records *whether* a lookup hit: `hits` and `misses` count lookups in this process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import polars as pl

from scangen.atomic import atomic_write_with
from scangen.experiments.code_fingerprint import code_fingerprint, process_code_fingerprint

if TYPE_CHECKING:
    from scangen.train.experiment import RunRecord

__all__ = ["RunCache", "code_fingerprint", "config_dict", "file_digest", "process_code_fingerprint",
           "run_key", "store_fingerprint"]

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def config_dict(config: Any) -> dict[str, Any]:
    """Plain-JSON dict of a training configuration (a dataclass or a mapping)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise TypeError(f"config: expected a dataclass instance or a mapping, got {type(config).__name__}")
    return json.loads(json.dumps(raw, sort_keys=True, default=str))


def file_digest(path: Path) -> str:
    """BLAKE2b hex digest of a file's bytes, memoised per (path, size, mtime) within the process."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        with open(path, "rb") as fh:
            _FILE_DIGESTS[memo] = hashlib.file_digest(fh, "blake2b").hexdigest()
    return _FILE_DIGESTS[memo]


def store_fingerprint(store: Path, fm: str | None = None) -> str:
    """Digest of a store's meta.json, slides.parquet and (if `fm` is given) embeddings/<fm>.parquet."""
    store = Path(store)
    parts = [store / "meta.json", store / "slides.parquet"]
    if fm is not None:
        parts.append(store / "embeddings" / f"{fm}.parquet")
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"store {store}: expected files {missing} to fingerprint the run cache")
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.name.encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()


def run_key(config: Any, store_fp: str, code_fp: str) -> str:
    """Cache key of one run: a short digest of config, store fingerprint and code fingerprint."""
    payload = json.dumps({"config": config_dict(config), "store": store_fp, "code": code_fp}, sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=10).hexdigest()


def _json_diagnostics(diagnostics: Mapping[str, float]) -> dict[str, float | None]:
    """Diagnostics as strict JSON (non-finite values as null)."""
    return {str(k): (float(v) if math.isfinite(float(v)) else None) for k, v in diagnostics.items()}


class RunCache:
    """Folder of finished runs (see the module docstring); `hits` / `misses` count this process's lookups."""

    def __init__(self, root: Path, code_fp: str | None = None) -> None:
        self.root = Path(root)
        self.code_fp = code_fp if code_fp is not None else process_code_fingerprint()
        self.hits = 0
        self.misses = 0

    def key(self, config: Any, store_fp: str) -> str:
        """Cache key of `config` run on the store with fingerprint `store_fp`."""
        return run_key(config, store_fp, self.code_fp)

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        folder = self.root / key
        return folder / "predictions.parquet", folder / "history.parquet", folder / "run.json"

    def has_record(self, key: str) -> bool:
        """Whether `key` holds a complete record (predictions, history and run.json)."""
        return all(p.is_file() for p in self._paths(key))

    def get(self, key: str) -> pl.DataFrame | None:
        """Cached predictions of `key`, or None when the run has not finished before."""
        pred_path, _, info_path = self._paths(key)
        if not (pred_path.is_file() and info_path.is_file()):
            return None
        return pl.read_parquet(pred_path)

    def info(self, key: str) -> dict[str, Any] | None:
        """The run.json record of `key` (config, fingerprints, diagnostics, seconds), or None."""
        info_path = self._paths(key)[2]
        return json.loads(info_path.read_text()) if info_path.is_file() else None

    def get_record(self, key: str) -> "RunRecord | None":
        """The cached RunRecord of `key` (diagnostics' nulls back to NaN), or None if incomplete/absent."""
        from scangen.train.experiment import RunRecord

        if not self.has_record(key):
            return None
        pred_path, hist_path, _ = self._paths(key)
        diag = (self.info(key) or {}).get("diagnostics") or {}
        return RunRecord(predictions=pl.read_parquet(pred_path), history=pl.read_parquet(hist_path),
                         diagnostics={k: (float("nan") if v is None else float(v)) for k, v in diag.items()})

    def put(self, key: str, predictions: pl.DataFrame, record: Mapping[str, Any]) -> None:
        """Store predictions with a run.json `record`: run.json first, predictions.parquet last (atomic)."""
        if not isinstance(predictions, pl.DataFrame):
            raise TypeError(f"predictions: expected a polars DataFrame, got {type(predictions).__name__}")
        pred_path, _, info_path = self._paths(key)
        text = json.dumps(dict(record), indent=1, sort_keys=True, default=str, allow_nan=False)
        atomic_write_with(info_path, lambda p: p.write_text(text))
        atomic_write_with(pred_path, lambda p: predictions.write_parquet(p))

    def put_record(self, key: str, record: "RunRecord", info: Mapping[str, Any]) -> None:
        """Store a finished RunRecord: run.json (`info` + diagnostics), history, predictions last (atomic)."""
        for name in ("predictions", "history"):
            if not isinstance(getattr(record, name), pl.DataFrame):
                raise TypeError(f"record.{name}: expected a polars DataFrame, got {type(getattr(record, name)).__name__}")
        pred_path, hist_path, info_path = self._paths(key)
        full = {**dict(info), "diagnostics": _json_diagnostics(record.diagnostics),
                "code_fingerprint": self.code_fp, "n_rows": record.predictions.height}
        text = json.dumps(full, indent=1, sort_keys=True, default=str, allow_nan=False)
        pred_path.unlink(missing_ok=True)  # an older entry must not look complete while this one is written
        atomic_write_with(info_path, lambda p: p.write_text(text))
        atomic_write_with(hist_path, lambda p: record.history.write_parquet(p))
        atomic_write_with(pred_path, lambda p: record.predictions.write_parquet(p))

    def get_or_run(
        self, config: Any, store_fp: str, run: Callable[[], pl.DataFrame]
    ) -> tuple[pl.DataFrame, bool]:
        """(predictions, cached): reuse the finished run of `config`, else call `run()` and store it."""
        key = self.key(config, store_fp)
        found = self.get(key)
        if found is not None:
            self.hits += 1
            return found, True
        self.misses += 1
        start = time.perf_counter()
        predictions = run()
        seconds = time.perf_counter() - start
        record = {"config": config_dict(config), "store_fingerprint": store_fp, "code_fingerprint": self.code_fp,
                  "train_seconds": seconds, "n_rows": predictions.height}
        self.put(key, predictions, record)
        return predictions, False
