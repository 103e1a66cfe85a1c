"""In-memory bags of patch embeddings: one flat (N, D) array plus offsets, never a list of arrays.

Bag i holds rows `features[offsets[i]:offsets[i+1]]`; row i of `slides` describes bag i. Keeping one
flat array makes loading, selecting and averaging vectorised (no Python loop over slides or rows).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import polars as pl


def gather_rows(offsets: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray | slice, np.ndarray]:
    """Row positions of bags `indices` (in that order) and the offsets of the gathered bags.

    Returns a slice when the bags are consecutive in ascending order (so callers can take views),
    otherwise an int64 index array built with one np.repeat (no per-bag loop).
    """
    indices = np.asarray(indices, dtype=np.int64)
    starts = offsets[:-1][indices]
    lengths = offsets[1:][indices] - starts
    new_offsets = np.zeros(len(indices) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    if len(indices) == 0:
        return slice(0, 0), new_offsets
    if np.all(np.diff(indices) == 1):
        return slice(int(starts[0]), int(starts[0] + new_offsets[-1])), new_offsets
    rows = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1], dtype=np.int64)
    return rows, new_offsets


class _BagArrays:
    """Methods shared by patch bags and registered-tile bags (per-row fields listed in _ROW_FIELDS)."""

    _ROW_FIELDS: tuple[str, ...] = ()
    slides: pl.DataFrame
    features: np.ndarray
    offsets: np.ndarray

    def _check(self) -> None:
        """Check shapes agree: offsets (n+1,) from 0 to N, per-row arrays of length N."""
        off = np.asarray(self.offsets)
        if off.ndim != 1 or off.dtype != np.int64:
            raise ValueError(f"offsets must be a 1-D int64 array, got {off.dtype} with shape {off.shape}")
        if len(off) != self.slides.height + 1:
            raise ValueError(f"offsets has {len(off)} entries, expected n_slides + 1 = {self.slides.height + 1}")
        if self.features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {self.features.shape}")
        if off[0] != 0 or off[-1] != len(self.features) or np.any(np.diff(off) < 0):
            raise ValueError("offsets must start at 0, be non-decreasing and end at len(features)")
        for name in self._ROW_FIELDS:
            arr = getattr(self, name)
            if arr is not None and len(arr) != len(self.features):
                raise ValueError(f"{name} has {len(arr)} rows, features has {len(self.features)}")

    def __len__(self) -> int:
        return self.slides.height

    @property
    def lengths(self) -> np.ndarray:
        """Number of patches per bag, (n,) int64."""
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.features.shape[1])

    @property
    def slide_ids(self) -> list[str]:
        """Slide ids in bag order."""
        return self.slides["slide_id"].to_list()

    def bag(self, i: int) -> np.ndarray:
        """Patch embeddings of bag i, (n_i, D), a view into `features`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"bag index {i} out of range for {n} bags")
        i %= n
        return self.features[self.offsets[i] : self.offsets[i + 1]]

    def slide_index(self, slide_ids: Sequence[str]) -> np.ndarray:
        """Bag positions of `slide_ids`, (k,) int64; unknown ids raise KeyError listing them."""
        wanted = pl.DataFrame({"slide_id": pl.Series(list(slide_ids), dtype=pl.String)})
        table = self.slides.select("slide_id").with_row_index("_pos")
        joined = wanted.join(table, on="slide_id", how="left", maintain_order="left")
        missing = joined.filter(pl.col("_pos").is_null())["slide_id"].to_list()
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            raise KeyError(f"slide ids not in these bags: [{shown}] ({len(missing)} in all)")
        return joined["_pos"].to_numpy().astype(np.int64)

    def select(self, indices: Sequence[int] | np.ndarray):
        """Bags `indices` in that order (bool masks allowed), gathered with one vectorised take."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if len(idx) != len(self):
                raise ValueError(f"boolean mask has {len(idx)} entries, expected {len(self)}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"bag indices out of range for {len(self)} bags")
        idx = np.where(idx < 0, idx + len(self), idx)
        rows, new_offsets = gather_rows(self.offsets, idx)
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        values["slides"] = self.slides[idx]
        values["offsets"] = new_offsets
        for name in ("features", *self._ROW_FIELDS):
            arr = values[name]
            values[name] = None if arr is None else arr[rows]
        return type(self)(**values)

    def mean_embeddings(self) -> np.ndarray:
        """Mean patch embedding of every bag, (n, D) float32 (sums accumulated in float32)."""
        lengths = self.lengths
        if np.any(lengths == 0):
            empty = self.slides.filter(pl.Series(lengths == 0))["slide_id"].to_list()
            raise ValueError(f"cannot average empty bags: {empty[:10]}")
        if len(self) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        sums = np.add.reduceat(self.features, self.offsets[:-1], axis=0, dtype=np.float32)
        return (sums / lengths[:, None].astype(np.float32)).astype(np.float32, copy=False)


@dataclass(eq=False)
class Bags(_BagArrays):
    """Patch-embedding bags of one model.

    slides: one row per bag (slides.parquet columns); features: (N, D) float32 or float16;
    offsets: (n + 1,) int64; coords: (N, 2) int32 level-0 (x, y); tissue_class: (N,) int8 or None;
    task_label: the task's name (meta.json; None for an embedding-only store). The label itself is
    the slides column `egfr` whatever the task's name.
    """

    slides: pl.DataFrame
    features: np.ndarray
    offsets: np.ndarray
    coords: np.ndarray
    tissue_class: np.ndarray | None = None
    task_label: str | None = "egfr"

    _ROW_FIELDS = ("coords", "tissue_class")

    def __post_init__(self) -> None:
        self._check()


@dataclass(eq=False)
class RegisteredBags(_BagArrays):
    """Registered tiles of one model: tile t of every scan of a specimen shows the same tissue.

    slides: one row per bag; features: (N, D); offsets: (n + 1,) int64; tile_id: (N,) int32;
    tissue_class: (N,) int8 or None.
    """

    slides: pl.DataFrame
    features: np.ndarray
    offsets: np.ndarray
    tile_id: np.ndarray
    tissue_class: np.ndarray | None = None

    _ROW_FIELDS = ("tile_id", "tissue_class")

    def __post_init__(self) -> None:
        self._check()
