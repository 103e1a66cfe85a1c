"""Batch samplers of the two data flows.

`TaskSampler`: EGFR-labelled bags of the task cohort, drawn without replacement from successive
random permutations (every bag is seen once per pass; no bag is ever dropped).
`ScanGenSampler`: K specimens of the ScanGen pool, each with all its scans in the scanner subset, so
a batch holds attraction pairs (same specimen, different scanners) and repulsion pairs (same
scanner, different specimens). Specimens with fewer than two eligible scans cannot form an
attraction pair; they are counted (`n_excluded`) and left out of the pool, and a pool that cannot
give both pair kinds is an error at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from scangen.scan_labels import magnification_pairs_of, primary_scanners, scanner_label, scanner_label_expr


class PermutationStream:
    """Endless stream of positions 0..n-1: a fresh `rng` permutation after each full pass."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        if n < 1:
            raise ValueError(f"n: expected a positive pool size, got {n}")
        self.n, self.rng = n, rng
        self._perm = rng.permutation(n)
        self._pos = 0

    def take(self, k: int) -> np.ndarray:
        """Next `k` (<= n) distinct positions; at a pass boundary the leftover positions are kept
        and the new permutation's copies of them are moved to its end."""
        if not 1 <= k <= self.n:
            raise ValueError(f"k: expected 1..{self.n}, got {k}")
        if self._pos + k <= self.n:
            out = self._perm[self._pos : self._pos + k]
            self._pos += k
            return out
        head = self._perm[self._pos :]
        new = self.rng.permutation(self.n)
        seen = np.isin(new, head)
        self._perm = np.concatenate([new[~seen], new[seen]])
        self._pos = k - head.size
        return np.concatenate([head, self._perm[: self._pos]])


class TaskSampler:
    """Batches of `batch_size` bag positions (into the full bag table) and their EGFR labels."""

    def __init__(self, positions: np.ndarray, labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            raise ValueError("task cohort: no EGFR-labelled training slides (split 'task_train' is empty)")
        labels = np.asarray(labels).astype(np.float32)
        if np.unique(labels).size < 2:
            raise ValueError("task cohort: the training pool holds a single class of the task label")
        self.positions, self.labels = positions, labels
        self.batch_size = min(int(batch_size), positions.size)
        self._stream = PermutationStream(positions.size, rng)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """(bag positions (B,), labels (B,) float32)."""
        pick = self._stream.take(self.batch_size)
        return self.positions[pick], self.labels[pick]


@dataclass(frozen=True)
class ScanGenBatch:
    """Bag positions (n,) with integer specimen and scanner codes (n,) of one ScanGen batch."""

    positions: np.ndarray
    specimen: np.ndarray
    scanner: np.ndarray


def has_both_pair_kinds(specimen: np.ndarray, scanner: np.ndarray) -> tuple[bool, bool]:
    """(any attraction pair, any repulsion pair) in a batch given its specimen and scanner codes."""
    same_s = specimen[:, None] == specimen[None, :]
    same_c = scanner[:, None] == scanner[None, :]
    return bool((same_s & ~same_c).any()), bool((same_c & ~same_s).any())


class ScanGenSampler:
    """K specimens per batch from the multiscanner `scangen_train` split, all their eligible scans.

    `scanner_subset` names scanners at the cohort's primary (highest) magnification (None: all of them).

    `slides` is the full bag table (with the `split` column); positions refer to its rows. Scans are
    grouped by `scangen.scan_labels.scanner_label` (GT450 at 20x is a scanner of its own).
    """

    MAX_REDRAWS = 100

    def __init__(
        self,
        slides: pl.DataFrame,
        k: int,
        rng: np.random.Generator,
        scanner_subset: Sequence[str] | None = None,
        include_20x: bool = False,
        split: str = "scangen_train",
    ) -> None:
        multi = slides.filter(pl.col("cohort") == "multiscanner")
        primary = int(multi["magnification"].max()) if multi.height else 40
        if scanner_subset is None:
            scanner_subset = primary_scanners(slides)
        labels = [scanner_label(s, primary, base=primary) for s in scanner_subset]
        if include_20x:  # the lower scan of every two-magnification scanner (GT450@20x in the simulation)
            labels.extend(scanner_label(p.scanner, p.low, base=primary) for p in magnification_pairs_of(multi))
        table = (
            slides.with_row_index("_pos")
            .filter((pl.col("cohort") == "multiscanner") & (pl.col("split") == split))
            .with_columns(scanner_label_expr(base=primary).alias("_label"))
            .filter(pl.col("_label").is_in(labels))
        )
        per = table.group_by("specimen_id").agg(pl.col("_label").n_unique().alias("n")).sort("specimen_id")
        eligible = per.filter(pl.col("n") >= 2)["specimen_id"].to_list()
        self.n_excluded = per.height - len(eligible)
        if len(eligible) < 2:
            raise ValueError(
                f"ScanGen pool: split {split!r} has {len(eligible)} specimens with >= 2 scans on scanners "
                f"{labels}; at least two are needed for attraction and repulsion pairs"
            )
        table = table.filter(pl.col("specimen_id").is_in(eligible)).sort("specimen_id", "_label", "_pos")
        self.specimens = eligible
        spec_code = {s: i for i, s in enumerate(eligible)}
        self.scanner_labels = labels
        scan_code = {s: i for i, s in enumerate(labels)}
        self._pos = table["_pos"].to_numpy().astype(np.int64)
        self._spec = np.array([spec_code[s] for s in table["specimen_id"].to_list()], dtype=np.int64)
        self._scan = np.array([scan_code[s] for s in table["_label"].to_list()], dtype=np.int64)
        if not has_both_pair_kinds(self._spec, self._scan)[1]:
            raise ValueError(f"ScanGen pool: no two specimens share a scanner among {labels}; no repulsion pair")
        self._starts = np.searchsorted(self._spec, np.arange(len(eligible) + 1))
        self.k = min(int(k), len(eligible))
        self._stream = PermutationStream(len(eligible), rng)

    def next(self) -> ScanGenBatch:
        """One batch holding both pair kinds; raises RuntimeError if redraws cannot find one."""
        for _ in range(self.MAX_REDRAWS):
            chosen = np.sort(self._stream.take(self.k))
            starts, ends = self._starts[chosen], self._starts[chosen + 1]
            sizes = ends - starts
            rows = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
            spec, scan = self._spec[rows], self._scan[rows]
            if all(has_both_pair_kinds(spec, scan)):
                return ScanGenBatch(self._pos[rows], spec, scan)
        raise RuntimeError(
            f"ScanGen sampler: no batch of {self.k} specimens with both pair kinds after "
            f"{self.MAX_REDRAWS} draws; increase scangen_k or check scanner coverage"
        )
