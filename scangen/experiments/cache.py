"""On-disk cache of finished training runs, keyed by a hash of everything that determines the run.

A run's key hashes (1) its training configuration (every field, as plain JSON), (2) a fingerprint of
the store it reads (meta.json, slides.parquet and the FM's embeddings file, by content), and (3) a
fingerprint of the source code that produces predictions (trainer, models, loss, splits, store
reader). Rerunning a notebook with unchanged inputs therefore reuses finished training; changing any
of the three trains again. One folder per key:

    <cache>/<key>/predictions.parquet   the run's predictions table (as run_experiment returns it)
    <cache>/<key>/run.json              the config, the fingerprints and the training wall time

Both files are written to a temporary name and moved into place with `os.replace`, and
`predictions.parquet` is written last of the two only after `run.json`, so a half-written entry is
never read back as finished (an entry counts only when both files exist).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import polars as pl

from scangen.atomic import atomic_write_with

import scangen

PACKAGE_DIR = Path(scangen.__file__).resolve().parent
CODE_PARTS: tuple[str, ...] = (
    "train", "models", "losses.py", "splits.py", "store", "constants.py",
    "metrics/__init__.py", "metrics/cov.py", "metrics/classification.py", "metrics/summary.py",
)
"""Parts of the package (relative to scangen/) whose source changes invalidate cached runs."""

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


def code_fingerprint(parts: Iterable[str] = CODE_PARTS, package_dir: Path = PACKAGE_DIR) -> str:
    """Digest of the source files of the package parts that produce predictions (absent parts skipped)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        path = package_dir / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else ([path] if path.is_file() else [])
        for f in files:
            h.update(str(f.relative_to(package_dir)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def process_code_fingerprint() -> str:
    """`code_fingerprint()` taken once per process: the code this process imported, even if the
    files change on disk while it runs."""
    return code_fingerprint()


def run_key(config: Any, store_fp: str, code_fp: str) -> str:
    """Cache key of one run: a short digest of config, store fingerprint and code fingerprint."""
    payload = json.dumps({"config": config_dict(config), "store": store_fp, "code": code_fp}, sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=10).hexdigest()


class RunCache:
    """Folder of finished runs; `get_or_run` returns cached predictions or trains and stores them.

    `hits` and `misses` count lookups in this process, so notebooks and tests can show what was reused.
    """

    def __init__(self, root: Path, code_fp: str | None = None) -> None:
        self.root = Path(root)
        self.code_fp = code_fp if code_fp is not None else process_code_fingerprint()
        self.hits = 0
        self.misses = 0

    def key(self, config: Any, store_fp: str) -> str:
        """Cache key of `config` run on the store with fingerprint `store_fp`."""
        return run_key(config, store_fp, self.code_fp)

    def _entry(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key
        return folder / "predictions.parquet", folder / "run.json"

    def get(self, key: str) -> pl.DataFrame | None:
        """Cached predictions of `key`, or None when the run has not finished before."""
        pred_path, info_path = self._entry(key)
        if not (pred_path.is_file() and info_path.is_file()):
            return None
        return pl.read_parquet(pred_path)

    def info(self, key: str) -> dict[str, Any] | None:
        """The run.json record of `key` (config, fingerprints, train seconds), or None."""
        _, info_path = self._entry(key)
        return json.loads(info_path.read_text()) if info_path.is_file() else None

    def put(self, key: str, predictions: pl.DataFrame, record: Mapping[str, Any]) -> None:
        """Store a finished run: run.json first, predictions.parquet last (both atomic)."""
        if not isinstance(predictions, pl.DataFrame):
            raise TypeError(f"predictions: expected a polars DataFrame, got {type(predictions).__name__}")
        pred_path, info_path = self._entry(key)
        text = json.dumps(dict(record), indent=1, sort_keys=True, default=str)
        atomic_write_with(info_path, lambda p: p.write_text(text))
        atomic_write_with(pred_path, lambda p: predictions.write_parquet(p))

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
