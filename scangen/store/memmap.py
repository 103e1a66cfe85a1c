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

import hashlib
import json
import mmap
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from .bags import Bags
from .reader import _BagFile, _check_dim, _check_orphans, _meta_dim, _wanted_slides, read_slides
from .schema import StoreValidationError, embeddings_path, format_ids, slides_path
from .validate import check_finite

FORMAT_VERSION = 1
"""Bumped whenever the cache layout or its arithmetic changes (old caches are then rebuilt)."""
CACHE_DIR = "memmap"
"""Folder of the caches inside the store."""
FLOAT16_MAX = float(np.finfo(np.float16).max)
RELEASE_BYTES = 256 << 20
"""Mapped bytes a reader may touch before its pages are handed back to the page cache (MappedPages)."""


def parquet_fingerprint(path: Path) -> dict:
    """Cheap identity of a Parquet file: size, mtime_ns, inode and a digest of its footer.

    Our writers replace files atomically (new inode, new mtime), and the footer records every row
    group's byte offsets and sizes, so any rewrite changes at least one of these.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        fh.seek(max(0, st.st_size - 8))
        tail = fh.read(8)
        footer_len = int.from_bytes(tail[:4], "little") if len(tail) == 8 and tail[4:] == b"PAR1" else 0
        fh.seek(max(0, st.st_size - 8 - footer_len))
        footer = fh.read(footer_len + 8)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "footer_blake2b": hashlib.blake2b(footer, digest_size=16).hexdigest()}


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
        _build(store, fm, tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first: keep its copy
            if not (final / "cache.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in final.parent.glob(f"{fm}-*"):
        if old != final and old.is_dir() and not old.name.startswith("."):
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


class _NpyWriter:
    """Appends rows to a .npy file of known shape, sequentially (no mapping, so memory stays flat)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.handle = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.handle, header)
        self.dtype, self.rows, self.expected = np.dtype(dtype), 0, shape[0]

    def append(self, rows: np.ndarray) -> None:
        np.ascontiguousarray(rows, dtype=self.dtype).tofile(self.handle)
        self.rows += len(rows)

    def close(self) -> None:
        if self.rows != self.expected:
            raise RuntimeError(f"{self.handle.name}: wrote {self.rows} rows, expected {self.expected}")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


class _SlideSums:
    """Per-slide float32 sums, fed row group by row group in file order.

    Each slide is summed by one `np.add.reduceat` over its complete rows upcast to float32, the
    exact operation Bags.mean_embeddings makes on an in-memory float32 array (numpy's reduction
    order inside a segment is its own, so a slide cut by a row-group edge waits, as float16 rows,
    until its last row arrives instead of carrying a partial sum). Memory: one row group plus the
    pending rows of one slide.
    """

    def __init__(self, offsets: np.ndarray, dim: int):
        self.offsets = offsets
        self.sums = np.zeros((len(offsets) - 1, dim), dtype=np.float32)
        self.pending: list[np.ndarray] = []
        self.start = 0  # first row of the pending slide (a slide start)

    def add(self, rows: np.ndarray) -> None:
        """Rows following those already added."""
        self.pending.append(np.array(rows, copy=True) if self.pending else rows)
        stop = self.start + sum(len(p) for p in self.pending)
        first = int(np.searchsorted(self.offsets, self.start, side="right") - 1)
        last = int(np.searchsorted(self.offsets, stop, side="right") - 1)  # slides first..last-1 are complete
        if last == first:
            if len(self.pending) == 1:
                self.pending = [np.array(rows, copy=True)]
            return
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        cut = int(self.offsets[last] - self.start)
        self.sums[first:last] = np.add.reduceat(block[:cut].astype(np.float32), self.offsets[first:last] - self.start, axis=0)
        self.pending = [np.array(block[cut:], copy=True)] if cut < len(block) else []
        self.start = int(self.offsets[last])


def _build(store: Path, fm: str, tmp: Path) -> None:
    """Decode, check and write the whole cache of `fm` into folder `tmp` (see module docstring)."""
    expected_dim = _meta_dim(store, fm)
    source_path = embeddings_path(store, fm)
    fingerprint = parquet_fingerprint(source_path)
    bag_file = _BagFile(source_path, ("patch_index", "x", "y"))
    meta = bag_file.file.metadata
    n_rows, names, offsets = int(meta.num_rows), bag_file.names, bag_file.offsets
    stored = np.dtype({"halffloat": "float16", "float": "float32"}[str(bag_file.schema.field("embedding").type.value_type)])
    has_tissue = "tissue_class" in bag_file.schema.names
    small = ["patch_index", "x", "y", *(["tissue_class"] if has_tissue else [])]
    feats = coords = tissue = None
    sums: _SlideSums | None = None
    start = 0
    for g in range(meta.num_row_groups):
        stop = start + meta.row_group(g).num_rows
        if stop == start:
            continue
        row_slide = bag_file.row_slide[start:stop]
        run_ids = [names[i] for i in np.unique(row_slide)]
        cols = _small_columns(bag_file, g, small, row_slide)
        local_offsets = np.concatenate([[0], np.flatnonzero(np.diff(row_slide)) + 1, [stop - start]]).astype(np.int64)
        bad = np.flatnonzero(cols["patch_index"] != np.arange(start, stop) - offsets[row_slide])
        if bad.size:
            raise StoreValidationError(
                f"{bag_file.source}: column 'patch_index' is not 0..n-1 in row order for slide ids "
                f"{format_ids([names[i] for i in np.unique(row_slide[bad])])}"
            )
        emb = bag_file._embeddings(np.array([g]), row_slide, stored)
        dim = emb.shape[1]
        if feats is None:
            _check_dim(store, fm, expected_dim, dim, bag_file.source)
            feats = _NpyWriter(tmp / "features.npy", (n_rows, dim), np.float16)
            coords = _NpyWriter(tmp / "coords.npy", (n_rows, 2), np.int32)
            tissue = _NpyWriter(tmp / "tissue_class.npy", (n_rows,), np.int8) if has_tissue else None
            sums = _SlideSums(offsets, dim)
        check_finite(emb, local_offsets, run_ids, bag_file.source)
        if stored != np.float16:
            _check_half_range(emb, local_offsets, run_ids, bag_file.source)
            emb = emb.astype(np.float16)
        feats.append(emb)
        coords.append(np.column_stack([cols["x"], cols["y"]]))
        if tissue is not None:
            tissue.append(cols["tissue_class"])
        sums.add(emb)
        start = stop
    if feats is None:
        raise StoreValidationError(f"{bag_file.source}: the table has no rows")
    for writer in (feats, coords, tissue):
        if writer is not None:
            writer.close()
    means = sums.sums / np.diff(offsets)[:, None].astype(np.float32)
    np.save(tmp / "offsets.npy", offsets.astype(np.int64))
    np.save(tmp / "means.npy", means.astype(np.float32, copy=False))
    info = {"format": FORMAT_VERSION, "source": source_path.name, "fingerprint": fingerprint,
            "stored_dtype": stored.name, "dim": int(dim), "rows": n_rows, "slide_ids": names}
    (tmp / "cache.json").write_text(json.dumps(info))


def _small_columns(bag_file: _BagFile, group: int, names: list[str], row_slide: np.ndarray) -> dict[str, np.ndarray]:
    """The integer columns `names` of row group `group`, null-checked and narrowed like load_bags."""
    from .columns import check_no_nulls, int_array

    table = bag_file.file.read_row_group(group, columns=names)
    out = {}
    for name in names:
        col = table.column(name)
        check_no_nulls(col, name, row_slide, bag_file.names, bag_file.source)
        out[name] = int_array(col, name, np.int8 if name == "tissue_class" else np.int32, bag_file.source)
    return out


def _check_half_range(emb: np.ndarray, offsets: np.ndarray, ids: list[str], source: str) -> None:
    """float32 values the float16 cache cannot hold (|v| > 65504) raise naming the slides."""
    rows = np.flatnonzero(np.abs(emb).max(axis=1) > FLOAT16_MAX)
    if rows.size:
        bags = np.unique(np.searchsorted(offsets, rows, side="right") - 1)
        raise StoreValidationError(
            f"{source}: column 'embedding' has values beyond the float16 range (|v| > {FLOAT16_MAX:g}) that the "
            f"memory-mapped float16 cache cannot hold, in slide ids {format_ids([ids[b] for b in bags])}; "
            f"load with mmap=False"
        )


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
    from .bags import gather_rows

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


class MappedPages:
    """Keeps the resident share of a mapped array bounded: after about `budget` bytes were read
    through the map, its pages are dropped from the process (madvise DONTNEED). They stay in the
    page cache, so a later read of the same rows is a minor fault, not a disk read; the process's
    RSS then tracks the batches it holds rather than everything it has ever touched."""

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

    def read(self, n_rows: int) -> None:
        """Count `n_rows` rows read (each may touch one page more than its bytes); release when over budget."""
        self.touched += int(n_rows) * (self.row_bytes + mmap.PAGESIZE)
        if self.touched >= self.budget:
            self.release()

    def release(self) -> None:
        """Drop every mapped page from this process now (the page cache keeps them)."""
        self.buffer.madvise(mmap.MADV_DONTNEED)
        self.touched = 0
