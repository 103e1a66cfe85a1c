"""A fitted harmonisation: one affine map per scanner, applied to every patch of a slide.

Every method of this package ends in the same form. For a patch embedding x (D,) of a slide whose
scanner label is b:
    y = (x - center_b) * linear_b + offset_b        (diagonal: linear_b is (D,))
    y = (x - center_b) @ linear_b + offset_b        (full: linear_b is (D, D); CORAL)
The map is affine, so the mean of the harmonised patches of a slide is the harmonised slide mean.
Only the slide's own scanner label is needed to apply it; no other slide enters (see `needs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import polars as pl

from scangen.harmonise.streaming import _chunk_rows, scanner_codes
from scangen.store.bags import _BagArrays

B = TypeVar("B", bound=_BagArrays)


@dataclass(eq=False)
class ScannerMaps:
    """Per-scanner affine maps fitted on training slides.

    method: name of the method that fitted them; scanners: fitted scanner labels (order of the
    first axis below); center, offset: (S, D) float64; linear: (S, D) diagonal scales or (S, D, D)
    matrices, float64; fit_slide_ids: the slides the fit read (nothing else entered it);
    details: method-specific estimates (e.g. ComBat's gamma*/delta*, CORAL's reference scanner).
    """

    method: str
    scanners: tuple[str, ...]
    center: np.ndarray
    linear: np.ndarray
    offset: np.ndarray
    fit_slide_ids: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, d = self.center.shape
        if self.offset.shape != (s, d) or self.linear.shape not in ((s, d), (s, d, d)) or len(self.scanners) != s:
            raise ValueError(
                f"ScannerMaps: inconsistent shapes center {self.center.shape}, linear {self.linear.shape}, "
                f"offset {self.offset.shape} for {len(self.scanners)} scanners"
            )
        for name in ("center", "linear", "offset"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"ScannerMaps ({self.method}): non-finite values in '{name}'")

    @property
    def dim(self) -> int:
        return int(self.center.shape[1])

    @property
    def full(self) -> bool:
        """True when the linear part is a full (D, D) matrix per scanner."""
        return self.linear.ndim == 3

    @cached_property
    def _f32(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(a.astype(np.float32) for a in (self.center, self.linear, self.offset))  # type: ignore[return-value]

    def _map(self, x: np.ndarray, code: int) -> np.ndarray:
        """Harmonise rows x (n, D) of scanner `code`, computed in float32."""
        center, linear, offset = self._f32
        y = np.asarray(x, dtype=np.float32) - center[code]
        y = y @ linear[code] if self.full else np.multiply(y, linear[code], out=y)
        y += offset[code]
        return y

    def transform(self, x: np.ndarray, slides: pl.DataFrame) -> np.ndarray:
        """Harmonise one embedding per slide (e.g. slide means), x (n, D), row i from slide i; float32."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape != (slides.height, self.dim):
            raise ValueError(f"transform: expected x of shape ({slides.height}, {self.dim}), got {x.shape}")
        codes = scanner_codes(slides, self.scanners)
        out = np.empty(x.shape, dtype=np.float32)
        for c in np.unique(codes):
            sel = codes == c
            out[sel] = self._map(x[sel], int(c))
        return out

    def apply(self, bags: B) -> B:
        """New bags with every patch harmonised by its slide's scanner map (all other fields shared).

        The output features are one new array of the input's float dtype (float16 stays float16);
        the work runs in chunks of whole bags, so no second full-size copy is made.
        """
        if bags.dim != self.dim:
            raise ValueError(f"apply: bags have D={bags.dim}, the maps were fitted on D={self.dim}")
        codes = scanner_codes(bags.slides, self.scanners)
        dtype = bags.features.dtype if bags.features.dtype in (np.float16, np.float32) else np.dtype(np.float32)
        out = np.empty(bags.features.shape, dtype=dtype)
        lengths = bags.lengths
        rows = _chunk_rows(self.dim)
        before = bags.offsets[:-1]
        cuts = np.flatnonzero(np.diff(before // rows)) + 1
        for part in np.split(np.arange(len(bags)), cuts):
            if part.size == 0:
                continue
            r0, r1 = int(bags.offsets[part[0]]), int(bags.offsets[part[-1] + 1])
            x = bags.features[r0:r1]
            row_codes = np.repeat(codes[part], lengths[part])
            for c in np.unique(row_codes):
                mask = row_codes == c
                sel = slice(None) if mask.all() else mask
                out[r0:r1][sel] = self._map(x[sel], int(c))
        return dataclasses.replace(bags, features=out)

    def same_parameters(self, other: "ScannerMaps") -> bool:
        """True when both fits hold identical scanners and arrays (bit for bit)."""
        return (
            self.scanners == other.scanners
            and all(np.array_equal(getattr(self, k), getattr(other, k)) for k in ("center", "linear", "offset"))
        )
