"""Chunked passes over bag features: fit positions, scanner codes, per-scanner moments.

Harmonisation is fitted on the patches of the fit slides only and must not copy the whole cohort:
every pass here walks the bags in chunks of about `CHUNK_ELEMENTS` feature values, converts one
chunk at a time to float32 and accumulates statistics in float64. Peak extra memory is a few
chunks, whatever the cohort size (features may be a read-only float16 memmap).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import polars as pl

from scangen.scan_labels import scanner_labels
from scangen.store.bags import _BagArrays, gather_rows

CHUNK_ELEMENTS = 1 << 20
"""Feature values per chunk (4 MiB as float32): bounds the temporary memory of every pass."""


def fit_positions_array(fit_positions: np.ndarray, n_bags: int) -> np.ndarray:
    """Sorted int64 bag positions from `fit_positions` (ints or a bool mask of length `n_bags`).

    Raises ValueError naming `fit_positions` when it is empty, out of range or repeats a position.
    """
    pos = np.asarray(fit_positions)
    if pos.dtype == bool:
        if pos.shape != (n_bags,):
            raise ValueError(f"fit_positions: boolean mask has shape {pos.shape}, expected ({n_bags},)")
        pos = np.flatnonzero(pos)
    if pos.ndim != 1 or (pos.size and not np.issubdtype(pos.dtype, np.integer)):
        raise ValueError(f"fit_positions: expected a 1-D array of bag positions, got {pos.dtype} {pos.shape}")
    pos = pos.astype(np.int64, copy=False)
    if pos.size == 0:
        raise ValueError("fit_positions: empty; harmonisation needs training slides to fit on")
    if pos.min() < 0 or pos.max() >= n_bags:
        raise ValueError(f"fit_positions: positions must lie in [0, {n_bags}), got [{pos.min()}, {pos.max()}]")
    pos = np.sort(pos)
    if np.any(np.diff(pos) == 0):
        raise ValueError(f"fit_positions: repeated positions {np.unique(pos[1:][np.diff(pos) == 0])[:10].tolist()}")
    return pos


def scanner_codes(slides: pl.DataFrame, scanners: tuple[str, ...]) -> np.ndarray:
    """Index into `scanners` of every slide's scanner label, (n,) int64.

    Raises ValueError listing labels (and example slides) that are not in `scanners`: a method
    fitted per scanner cannot harmonise a scanner it never saw.
    """
    labels = scanner_labels(slides)
    lookup = {name: i for i, name in enumerate(scanners)}
    codes = np.array([lookup.get(lab, -1) for lab in labels], dtype=np.int64)
    if np.any(codes < 0):
        unknown = sorted(set(labels[codes < 0].tolist()))
        examples = slides["slide_id"].to_numpy()[codes < 0][:5].tolist() if "slide_id" in slides.columns else []
        raise ValueError(
            f"scanner labels {unknown} (e.g. slides {examples}) were not in the fit set; "
            f"fitted scanners: {list(scanners)}"
        )
    return codes


def fit_scanners(slides: pl.DataFrame, positions: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Scanner labels present at `positions` (first-appearance order) and each fit slide's code."""
    labels = scanner_labels(slides[positions])
    names = tuple(dict.fromkeys(labels.tolist()))
    lookup = {name: i for i, name in enumerate(names)}
    return names, np.array([lookup[lab] for lab in labels], dtype=np.int64)


def _chunk_rows(dim: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(dim, 1))


def iter_chunks(bags: _BagArrays, positions: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (chunk positions, their lengths, float32 features of their rows) over `positions` in order.

    Chunks hold whole bags and about `CHUNK_ELEMENTS` values (one bag at least); empty bags are skipped.
    """
    lengths = bags.lengths[positions]
    keep = lengths > 0
    positions, lengths = positions[keep], lengths[keep]
    if positions.size == 0:
        return
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    group = before // _chunk_rows(bags.dim)
    cuts = np.flatnonzero(np.diff(group)) + 1
    for pos, lens in zip(np.split(positions, cuts), np.split(lengths, cuts)):
        rows, _ = gather_rows(bags.offsets, pos)
        yield pos, lens, np.asarray(bags.features[rows], dtype=np.float32)


def _bag_starts(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def scanner_means(
    bags: _BagArrays, positions: np.ndarray, codes: np.ndarray, n_scanners: int
) -> tuple[np.ndarray, np.ndarray]:
    """Patch-weighted mean feature per scanner over the bags at `positions`: ((B, D) float64, (B,) counts).

    `codes` (len(positions),) is each fit bag's scanner index. Scanners without patches raise.
    """
    code_of = dict(zip(positions.tolist(), codes.tolist()))
    sums = np.zeros((n_scanners, bags.dim), dtype=np.float64)
    counts = np.zeros(n_scanners, dtype=np.int64)
    for pos, lens, x in iter_chunks(bags, positions):
        bag_sums = np.add.reduceat(x, _bag_starts(lens), axis=0, dtype=np.float64)
        c = np.array([code_of[p] for p in pos.tolist()], dtype=np.int64)
        np.add.at(sums, c, bag_sums)
        np.add.at(counts, c, lens)
    if np.any(counts == 0):
        raise ValueError(f"scanners with no fit patches (indices {np.flatnonzero(counts == 0).tolist()})")
    return sums / counts[:, None], counts


def centred_second_moments(
    bags: _BagArrays, positions: np.ndarray, codes: np.ndarray, means: np.ndarray, full: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-scanner sums of centred squares over the fit patches (a second pass, after the means).

    full=False: ((B, D) sums of (x - mu)^2, (B,) zeros); full=True: ((B, D, D) sums of
    (x - mu)(x - mu)^T, (B,) sums of |x - mu|^4, the fourth-moment term of Ledoit-Wolf shrinkage).
    """
    code_of = dict(zip(positions.tolist(), codes.tolist()))
    n_scanners, dim = means.shape
    second = np.zeros((n_scanners, dim, dim) if full else (n_scanners, dim), dtype=np.float64)
    fourth = np.zeros(n_scanners, dtype=np.float64)
    mu32 = means.astype(np.float32)
    for pos, lens, x in iter_chunks(bags, positions):
        row_codes = np.repeat(np.array([code_of[p] for p in pos.tolist()], dtype=np.int64), lens)
        for c in np.unique(row_codes):
            xc = x[row_codes == c] - mu32[c]
            if full:
                second[c] += xc.T @ xc
                fourth[c] += float(np.sum(np.einsum("ij,ij->i", xc, xc, dtype=np.float64) ** 2))
            else:
                second[c] += np.einsum("ij,ij->j", xc, xc, dtype=np.float64)
    return second, fourth


def slide_means(bags: _BagArrays, positions: np.ndarray) -> np.ndarray:
    """Mean patch embedding of the bags at `positions` (in that order), (k, D) float64, chunk by chunk."""
    out = np.zeros((len(positions), bags.dim), dtype=np.float64)
    if np.any(bags.lengths[positions] == 0):
        empty = bags.slides[positions].filter(pl.Series(bags.lengths[positions] == 0))["slide_id"].to_list()
        raise ValueError(f"cannot average empty bags: {empty[:10]}")
    order = {p: i for i, p in enumerate(positions.tolist())}
    for pos, lens, x in iter_chunks(bags, positions):
        sums = np.add.reduceat(x, _bag_starts(lens), axis=0, dtype=np.float64)
        out[[order[p] for p in pos.tolist()]] = sums / lens[:, None]
    return out
