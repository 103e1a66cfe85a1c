"""Memory-mapped float16 cache of one model's patch embeddings, derived from the Parquet store.

The Parquet table stays the validated interchange format; this cache only makes it cheap to read a
few rows of a cohort larger than memory. It is built once, on first use, in one streaming pass over
the row groups (memory: one row group at a time), and lives beside the store:

    <store>/memmap/<fm>-<key>/features.npy      (N, D) float16, rows in the Parquet file's row order
                              coords.npy        (N, 2) int32 level-0 (x, y)
                              tissue_class.npy  (N,) int8, only if the table has that column
                              offsets.npy       (n + 1,) int64: slide run j is rows offsets[j]:offsets[j+1]
                              means.npy         (n, D) float32 slide means (as Bags.mean_embeddings)
                              cache.json        provenance: source file, fingerprint, slide ids, D

`key` is a digest of the format version and the Parquet file's fingerprint (size, mtime, inode and
footer bytes), so a rewritten table gets a new folder and the old one is removed after the rebuild.
A build writes into a temporary sibling folder and renames it into place only once every file is
complete (cache.json last); a killed build leaves only that temporary folder, which the next build
deletes. Every check `load_bags` makes (nulls, patch order, finite values, D) is made during the
build, plus one more: float32 values outside the float16 range are refused instead of becoming inf.

Numbers: float16 stores are cached bit for bit, so a float32 upcast of a gathered batch equals the
in-memory float32 path exactly; float32 stores are rounded to float16 (relative error <= 2**-11).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

from .bags import Bags, gather_rows
from .memmap_build import FORMAT_VERSION, build_cache, parquet_fingerprint
from .reader import _check_dim, _check_orphans, _meta_dim, _wanted_slides, read_slides
from .schema import StoreValidationError, embeddings_path, format_ids, slides_path

CACHE_DIR = "memmap"
"""Folder of the caches inside the store."""
RELEASE_BYTES = 256 << 20
"""Mapped bytes a reader may touch before its pages are handed back to the page cache (MappedPages)."""


def cache_folder(store: Path, fm: str, cache_root: Path | None = None) -> Path:
    """Folder the cache of `fm` in `store` has for the embedding table as it is now."""
    fp = parquet_fingerprint(embeddings_path(store, fm))
    key = hashlib.blake2b(json.dumps([FORMAT_VERSION, fp], sort_keys=True).encode(), digest_size=8).hexdigest()
    return (Path(cache_root) if cache_root is not None else Path(store) / CACHE_DIR) / f"{fm}-{key}"


def ensure_cache(store: Path, fm: str, cache_root: Path | None = None) -> Path:
    """The cache folder of `fm`, built first if missing; stale caches of `fm` are removed after a build."""
    store = Path(store)
    final = cache_folder(store, fm, cache_root)
    if (final / "cache.json").is_file():
        return final
    _remove_dead_temporaries(final.parent, fm)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fm}-build-{os.getpid()}-", dir=_mkdir(final.parent)))
    try:
        build_cache(store, fm, tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first: keep its copy
            if not (final / "cache.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in final.parent.iterdir():
        if old != final and old.is_dir() and re.fullmatch(rf"{re.escape(fm)}-[0-9a-f]{{16}}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_dead_temporaries(root: Path, fm: str) -> None:
    """Delete build folders of `fm` left by processes that no longer exist (killed builds)."""
    if not root.is_dir():
        return
    for tmp in root.glob(f".{fm}-build-*"):
        try:
            pid = int(tmp.name[len(f".{fm}-build-"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def load_mapped_bags(
    store: Path, fm: str, slide_ids: Sequence[str] | None = None, cache_root: Path | None = None
) -> Bags:
    """Bags of `fm` whose features, coords and tissue classes are read-only maps of the float16 cache.

    Same slides, order, checks and errors as `load_bags`; the cache is built on first use. When the
    requested slides are the cache's slide runs in file order (all slides, or any consecutive
    ascending run), the arrays are views of the maps; any other order is gathered into memory
    (float16) with a warning, since a bag must be one contiguous block of rows. The slide means
    come from the cache (`Bags.mean_embeddings` returns them without reading the features).
    """
    store = Path(store)
    expected_dim = _meta_dim(store, fm)
    slides = read_slides(store)
    chosen = _wanted_slides(slides, slide_ids, str(slides_path(store)))
    folder = ensure_cache(store, fm, cache_root)
    info = json.loads((folder / "cache.json").read_text())
    source = str(embeddings_path(store, fm))
    names: list[str] = info["slide_ids"]
    _check_orphans(SimpleNamespace(names=names, source=source), slides, store, "embeddings")
    _check_dim(store, fm, expected_dim, int(info["dim"]), source)
    index = {name: i for i, name in enumerate(names)}
    ids = chosen["slide_id"].to_list()
    missing = [s for s in ids if s not in index]
    if missing:
        raise StoreValidationError(f"{source}: no embeddings for slide ids {format_ids(missing)}")
    runs = np.array([index[s] for s in ids], dtype=np.int64)
    offsets_all = np.load(folder / "offsets.npy")
    means = np.load(folder / "means.npy")[runs]
    arrays = {name: _open_map(folder / f"{name}.npy") for name in ("features", "coords", "tissue_class")}
    rows, offsets = gather_rows(offsets_all, runs)
    if not isinstance(rows, slice):
        gathered = offsets[-1] * arrays["features"].shape[1] * 2
        warnings.warn(
            f"{source}: slides requested in an order other than the table's; gathering {gathered / 2**20:.0f} MiB "
            f"of float16 features into memory instead of mapping them", stacklevel=2,
        )
    picked = {k: (None if v is None else v[rows]) for k, v in arrays.items()}
    bags = Bags(chosen, picked["features"], offsets, picked["coords"], picked["tissue_class"])
    bags.attach_means(means)
    return bags


def _open_map(path: Path) -> np.ndarray | None:
    """Read-only float16/int map of a cache array (copy-on-write pages, so a stray write through a
    shared torch tensor stays private to the process instead of faulting); None if absent."""
    if not path.is_file():
        return None
    arr = np.load(path, mmap_mode="c")
    arr.flags.writeable = False
    return arr


def mapped_buffer(array: object) -> mmap.mmap | None:
    """The mmap object behind a numpy array (a np.memmap or a view of one), or None."""
    seen = 0
    while array is not None and seen < 32:
        buf = getattr(array, "_mmap", None)
        if isinstance(buf, mmap.mmap):
            return buf
        if isinstance(array, mmap.mmap):
            return array
        array = getattr(array, "base", None)
        seen += 1
    return None


FAULT_AROUND_BYTES = 64 << 10
"""Bytes the kernel maps around each page fault of a file mapping (Linux `fault_around_bytes` default)."""


class MappedPages:
    """Keeps the resident share of a mapped array bounded.

    Pages read through a map count in the process's RSS until the kernel reclaims them, and each
    fault maps a whole FAULT_AROUND_BYTES window of the file, so scattered rows map far more than
    their bytes. After about `budget` bytes of distinct windows were touched, the map's pages are
    dropped from the process (madvise DONTNEED); they stay in the page cache, so a later read of the
    same rows is a minor fault, not a disk read. RSS then tracks the batches, not the cohort.
    """

    def __init__(self, buffer: mmap.mmap, row_bytes: int, budget: int = RELEASE_BYTES):
        self.buffer, self.row_bytes, self.budget = buffer, int(row_bytes), int(budget)
        self.touched = 0

    @classmethod
    def of(cls, array: np.ndarray, budget: int = RELEASE_BYTES) -> MappedPages | None:
        """A MappedPages for `array`'s map, or None when `array` is not memory-mapped."""
        buf = mapped_buffer(array)
        if buf is None or not hasattr(buf, "madvise"):
            return None
        return cls(buf, array.strides[0] if array.ndim else array.itemsize, budget)

    def read(self, rows: torch.Tensor) -> None:
        """Count the fault windows rows `rows` (int64, CPU) touch; release when over budget."""
        windows = torch.div(rows.reshape(-1) * self.row_bytes, FAULT_AROUND_BYTES, rounding_mode="floor")
        self.touched += int(torch.unique(windows).numel()) * (FAULT_AROUND_BYTES + self.row_bytes)
        if self.touched >= self.budget:
            self.release()

    def release(self) -> None:
        """Drop every mapped page from this process now (the page cache keeps them)."""
        self.buffer.madvise(mmap.MADV_DONTNEED)
        self.touched = 0


@functools.lru_cache(maxsize=1)
def _libc_mallopt():
    """glibc's mallopt, or None (non-glibc). Looked up once: find_library runs a subprocess, and the
    allocator mode is set each time BagTensors are built."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def _mallopt(settings: Sequence[tuple[int, int]]) -> bool:
    """Apply glibc mallopt (param, value) pairs; False where mallopt is unavailable (non-glibc)."""
    mallopt = _libc_mallopt()
    return mallopt is not None and all(bool(mallopt(param, int(value))) for param, value in settings)


def return_large_buffers(threshold: int = 1 << 20) -> bool:
    """Bounded-memory allocator mode: glibc serves allocations >= `threshold` bytes with their own
    mmap, returned on free, and trims the heap top at its default 128 KiB.

    glibc's default raises its mmap threshold to the size of each freed large buffer (up to 32 MiB),
    after which batch-sized buffers come from the heap and their freed holes stay resident; with
    evaluation batches of varying shapes the heap then grows with the number of batches, i.e. with
    the cohort (measured: peak anonymous RSS +160 MiB from a 0.4 to a 0.8 GB store; flat with this
    setting). The price is a page fault per page of every large buffer, each time: `BagTensors`
    uses this mode only for mapped cohorts above BOUNDED_MEMORY_BYTES. Process-wide; a no-op
    (False) where glibc's mallopt is unavailable.
    """
    return _mallopt([(_M_MMAP_THRESHOLD, threshold), (_M_TRIM_THRESHOLD, 128 << 10)])


def keep_freed_memory() -> bool:
    """Speed allocator mode: glibc keeps freed memory for reuse (mmap threshold at its 32 MiB maximum,
    heap trimmed only above 1 GiB free), for cohorts well inside memory.

    Training allocates and frees the same large tensors every step; in the bounded mode (or after
    glibc's own threshold moves) every step pays page faults to zero fresh pages again. Measured
    (hoptimus0-sim, 10-run ensemble on the mapped quick store, idle 2 cores): 4.53 s per run and
    29 s of kernel time in the bounded mode, 3.66 s and 8 s in this one. Numbers are unchanged
    (allocation only). Process-wide; False where glibc's mallopt is unavailable."""
    return _mallopt([(_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30)])


BOUNDED_MEMORY_BYTES = 512 << 20
"""Mapped cohorts (one FM's features) above this many bytes train with the bounded-memory allocator
mode (`return_large_buffers`); smaller ones (the quick cohort: 233 MB for hoptimus0-sim) and
in-memory bags with the speed mode (`keep_freed_memory`). `MappedPages` releases the map's pages in
both (keeping them resident measured faster alone, 2.84 vs 3.31 s per run, but the quick set's
largest process then passed 4 GB: 4.26 GB, and the set was not faster end to end)."""
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
