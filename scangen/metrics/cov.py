"""Scanner and magnification coefficient of variation (CoV) of slide-level predictions.

For a specimen `s` scanned on scanners `c`, with values `v(s, c)` (logits by default):
`CoV_s = std_c v(s, c) / |mean_c v(s, c)|` (population std, ddof = 0) and `CoV = mean_s CoV_s`.
Lower is better: 0 means every scan of a specimen gets the same prediction.

A specimen whose |mean| is tiny makes its CoV explode. Such specimens are flagged (`near_zero`),
counted and reported, never dropped; the denominator is floored at `eps` so the value stays finite.

The magnification CoV is the same statistic over the two scans of a specimen by one scanner at two
magnifications; the pairs are found in the data (every scanner that scanned the same specimens at
its highest and at another magnification: GT450 40x/20x in the simulated cohort). Without any pair
it is not available (NaN), not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl

from scangen.scan_labels import magnification_pairs_of

NEAR_ZERO_TOL = 0.5
"""|mean logit| below which a specimen is flagged "near zero" (the rule for the logit scale).

A specimen with |mean logit| < 0.5 has a mean predicted probability between 0.38 and 0.62: the model
barely commits to a class for it, and any scanner spread of the size trained models show (within-
specimen logit SD 0.3-0.8 on the quick cohort) gives it a CoV near or above 1, several times the whole
cohort's CoV in the paper (0.12-0.45). Its CoV then measures the distance to the decision boundary
more than scanner disagreement. The former cut, 0.1 (probability 0.475-0.525), missed specimens at
|mean| 0.3-0.5 whose CoV already dominated the mean. Flagged specimens are counted, never dropped."""
NEAR_ZERO_TOL_PROB = 0.05
"""The same flag on the probability scale (`on="prob"`): a mean probability below 0.05, where the
denominator of a probability CoV is small."""

ValueKind = Literal["logit", "prob"]


def _as_values(values: Sequence[float] | np.ndarray, on: ValueKind) -> np.ndarray:
    """Float64 copy of `values` (logits), mapped through a sigmoid when `on == "prob"`."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"values: expected finite numbers, found {int((~np.isfinite(arr)).sum())} non-finite")
    if on == "logit":
        return arr
    if on == "prob":
        return 1.0 / (1.0 + np.exp(-arr))
    raise ValueError(f"on: expected 'logit' or 'prob', got {on!r}")


def scanner_cov_per_specimen(
    values: Sequence[float] | np.ndarray,
    specimen: Sequence[str] | np.ndarray,
    *,
    eps: float = 1e-6,
    on: ValueKind = "logit",
    near_zero_tol: float | None = None,
) -> pl.DataFrame:
    """Per-specimen CoV table over the scans given (one value per scan).

    `values` are logits (mapped to probabilities when `on="prob"`); `specimen` gives each scan's
    specimen. Returns one row per specimen, sorted by id: `specimen_id`, `n_scans`, `mean`, `std`,
    `cov` (= std / max(|mean|, eps)) and `near_zero` (|mean| < `near_zero_tol` on the value scale
    used; default NEAR_ZERO_TOL for logits, NEAR_ZERO_TOL_PROB for probabilities). Raises ValueError when lengths differ or any specimen has fewer than two scans.
    """
    if eps <= 0:
        raise ValueError(f"eps: expected a positive number, got {eps}")
    if near_zero_tol is None:
        near_zero_tol = NEAR_ZERO_TOL_PROB if on == "prob" else NEAR_ZERO_TOL
    vals = _as_values(values, on)
    spec = np.asarray(specimen).astype(str).reshape(-1)
    if vals.shape[0] != spec.shape[0]:
        raise ValueError(f"values and specimen: expected equal lengths, got {vals.shape[0]} and {spec.shape[0]}")
    if vals.shape[0] == 0:
        raise ValueError("values: expected at least one scan, got none")
    ids, inverse, counts = np.unique(spec, return_inverse=True, return_counts=True)
    if np.any(counts < 2):
        bad = ids[counts < 2][:10].tolist()
        raise ValueError(
            f"specimen: every specimen needs at least two scans for a CoV; "
            f"{int((counts < 2).sum())} have one (e.g. {bad})"
        )
    sums = np.bincount(inverse, weights=vals, minlength=ids.size)
    mean = sums / counts
    sq = np.bincount(inverse, weights=(vals - mean[inverse]) ** 2, minlength=ids.size)
    std = np.sqrt(sq / counts)
    cov = std / np.maximum(np.abs(mean), eps)
    return pl.DataFrame(
        {
            "specimen_id": ids.tolist(),
            "n_scans": counts.astype(np.int64),
            "mean": mean,
            "std": std,
            "cov": cov,
            "near_zero": np.abs(mean) < near_zero_tol,
        }
    )


def scanner_cov(
    values: Sequence[float] | np.ndarray,
    specimen: Sequence[str] | np.ndarray,
    *,
    eps: float = 1e-6,
    on: ValueKind = "logit",
) -> float:
    """Mean over specimens of the per-specimen CoV (see `scanner_cov_per_specimen`)."""
    table = scanner_cov_per_specimen(values, specimen, eps=eps, on=on)
    return float(table["cov"].mean())


def median_scanner_cov(
    values: Sequence[float] | np.ndarray,
    specimen: Sequence[str] | np.ndarray,
    *,
    eps: float = 1e-6,
    on: ValueKind = "logit",
) -> float:
    """Median over specimens of the per-specimen CoV: the paper's CoV without its heavy tail (a few
    specimens with mean logit near 0 decide the mean)."""
    table = scanner_cov_per_specimen(values, specimen, eps=eps, on=on)
    return float(table["cov"].median())


def within_specimen_sd(
    values: Sequence[float] | np.ndarray,
    specimen: Sequence[str] | np.ndarray,
    *,
    on: ValueKind = "logit",
) -> float:
    """Mean over specimens of the population std of a specimen's values across its scans: scanner
    disagreement on the value scale itself, free of the CoV's |mean| denominator."""
    table = scanner_cov_per_specimen(values, specimen, on=on)
    return float(table["std"].mean())


MAGNIFICATION_TABLE_COLUMNS = ("specimen_id", "n_scans", "mean", "std", "cov", "near_zero", "pair")


def magnification_pairs(pred: pl.DataFrame, scanner: str | None = None) -> pl.DataFrame:
    """Rows of `pred` forming magnification pairs, with a `pair` column ("GT450 40x/20x").

    The pairs are found in the data (`scangen.scan_labels.magnification_pairs_of`): every scanner
    that scanned specimens at its highest magnification and at another one (only `scanner` when
    given). Only specimens scanned at both magnifications of a pair are kept (the others are counted
    by `magnification_pairs_of`); a row at the high magnification appears once per pair it is in.
    No pair gives an empty table: the magnification CoV is then not available.
    """
    missing = {"specimen_id", "scanner", "magnification"} - set(pred.columns)
    if missing:
        raise ValueError(f"predictions: missing columns {sorted(missing)}")
    parts = []
    for p in magnification_pairs_of(pred):
        if scanner is not None and p.scanner != scanner:
            continue
        rows = pred.filter((pl.col("scanner") == p.scanner) & pl.col("magnification").is_in([p.high, p.low]))
        both = rows.group_by("specimen_id").agg(pl.col("magnification").n_unique().alias("n")).filter(pl.col("n") == 2)
        rows = rows.filter(pl.col("specimen_id").is_in(both["specimen_id"].implode()))
        parts.append(rows.with_columns(pl.lit(f"{p.scanner} {p.high}x/{p.low}x").alias("pair")))
    if not parts:
        return pred.clear().with_columns(pl.lit(None, dtype=pl.String).alias("pair"))
    return pl.concat(parts)


def magnification_cov_per_specimen(
    pred: pl.DataFrame, *, eps: float = 1e-6, on: ValueKind = "logit", value: str = "logit"
) -> pl.DataFrame:
    """Per-specimen CoV table (as `scanner_cov_per_specimen`, plus the `pair`) over every
    magnification pair in `pred` (see `magnification_pairs`); empty when there is none."""
    if value not in pred.columns:
        raise ValueError(f"value: column {value!r} is not in the predictions (columns {pred.columns})")
    rows = magnification_pairs(pred)
    if rows.height == 0:
        return pl.DataFrame(schema={"specimen_id": pl.String, "n_scans": pl.Int64, "mean": pl.Float64,
                                    "std": pl.Float64, "cov": pl.Float64, "near_zero": pl.Boolean, "pair": pl.String})
    tables = []
    for (pair,), part in rows.group_by("pair", maintain_order=True):
        table = scanner_cov_per_specimen(part[value].to_numpy(), part["specimen_id"].to_numpy(), eps=eps, on=on)
        tables.append(table.with_columns(pl.lit(pair).alias("pair")))
    return pl.concat(tables).select(MAGNIFICATION_TABLE_COLUMNS)


def magnification_cov(
    pred: pl.DataFrame, *, eps: float = 1e-6, on: ValueKind = "logit", value: str = "logit"
) -> float:
    """Mean CoV over every magnification pair of every specimen in `pred`; NaN (not available) when
    no scanner scanned the same specimens at two magnifications."""
    table = magnification_cov_per_specimen(pred, eps=eps, on=on, value=value)
    return float(table["cov"].mean()) if table.height else float("nan")


def magnification_cov_available(pred: pl.DataFrame) -> bool:
    """True when some scanner scanned the same specimens at two magnifications in `pred`."""
    return bool(magnification_pairs_of(pred))
