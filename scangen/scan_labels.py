"""Scanner labels: one string per scan that tells scanners and magnifications apart.

A 40x scan is labelled by its scanner code ("AT2"); a scan at any other magnification by
"<scanner>@<magnification>x" ("GT450@20x"). The ScanGen sampler, the robustness metrics and the
scanner-bias experiment all use this one convention, so "scanner" names the same group of scans
everywhere (the GT450 20x scans are a scanner of their own, never merged with GT450 at 40x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

BASE_MAGNIFICATION = 40
"""Magnification whose scans are labelled by the bare scanner code."""


def scanner_label(scanner: str, magnification: int, base: int = BASE_MAGNIFICATION) -> str:
    """Label of one scan: `scanner` at the `base` magnification (40x), e.g. 'GT450@20x' at another."""
    mag = int(magnification)
    return scanner if mag == int(base) else f"{scanner}@{mag}x"


def scanner_label_expr(scanner: str = "scanner", magnification: str = "magnification",
                       base: int = BASE_MAGNIFICATION) -> pl.Expr:
    """Polars expression computing `scanner_label` row-wise from two columns (null stays null)."""
    code = pl.col(scanner).cast(pl.String)
    return (
        pl.when(pl.col(magnification) == int(base))
        .then(code)
        .otherwise(code + "@" + pl.col(magnification).cast(pl.String) + "x")
    )


def scanner_labels(slides: pl.DataFrame, base: int = BASE_MAGNIFICATION) -> np.ndarray:
    """Label per row of a slides table (str array); a table without `magnification` is taken as at
    `base`. `base` is the magnification labelled by the bare scanner name (a store's primary
    magnification; 40 by default, the simulated cohort's)."""
    if "scanner" not in slides.columns:
        raise ValueError(f"slides: expected a 'scanner' column to label scans, got columns {slides.columns}")
    columns = [c for c in ("scanner", "magnification") if c in slides.columns]
    nulls = [c for c in columns if slides[c].null_count()]
    if nulls:
        raise ValueError(f"slides: column(s) {nulls} hold nulls; every scan needs a scanner and a magnification")
    if "magnification" not in slides.columns:
        return slides["scanner"].cast(pl.String).to_numpy().astype(str)
    return slides.select(scanner_label_expr(base=base).alias("label"))["label"].to_numpy().astype(str)


def primary_scanners(slides: pl.DataFrame, cohort: str | None = "multiscanner") -> tuple[str, ...]:
    """The scanners of a store's primary magnification (its highest), in first-appearance order.

    These are the scanners the scanner CoV, the ScanGen scanner subset and the ablation range over.
    `cohort` restricts to one cohort when the table has a `cohort` column (None: all rows). Raises
    ValueError when the table lacks `scanner`/`magnification` or holds no scan.
    """
    missing = {"scanner", "magnification"} - set(slides.columns)
    if missing:
        raise ValueError(f"slides: expected columns {sorted(missing)} to find the primary scanners")
    rows = slides
    if cohort is not None and "cohort" in slides.columns:
        rows = slides.filter(pl.col("cohort") == cohort)
    if rows.height == 0:
        raise ValueError(f"slides: no scans{'' if cohort is None else f' in cohort {cohort!r}'} to find the primary scanners")
    top = rows["magnification"].max()
    names = rows.filter(pl.col("magnification") == top)["scanner"].cast(pl.String).to_list()
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class MagnificationPair:
    """A scanner that scanned `n_specimens` specimens at both `high` and `low` magnification."""

    scanner: str
    high: int
    low: int
    n_specimens: int
    n_unpaired: int
    """Specimens of the scanner scanned at only one of the two magnifications."""


def magnification_pairs_of(slides: pl.DataFrame) -> tuple[MagnificationPair, ...]:
    """Every (scanner, its highest magnification, another magnification) with at least one specimen
    scanned at both, found in a slides (or predictions) table; sorted by scanner then magnification."""
    missing = {"scanner", "magnification", "specimen_id"} - set(slides.columns)
    if missing:
        raise ValueError(f"slides: expected columns {sorted(missing)} to find magnification pairs")
    out = []
    per_scanner = slides.select("scanner", "magnification", "specimen_id").unique()
    for scanner in sorted(set(per_scanner["scanner"].to_list())):
        rows = per_scanner.filter(pl.col("scanner") == scanner)
        mags = sorted(set(rows["magnification"].to_list()), reverse=True)
        for low in mags[1:]:
            hi_spec = set(rows.filter(pl.col("magnification") == mags[0])["specimen_id"].to_list())
            lo_spec = set(rows.filter(pl.col("magnification") == low)["specimen_id"].to_list())
            both = hi_spec & lo_spec
            if both:
                out.append(MagnificationPair(str(scanner), int(mags[0]), int(low), len(both), len(hi_spec ^ lo_spec)))
    return tuple(out)
