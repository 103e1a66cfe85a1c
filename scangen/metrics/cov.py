"""Scanner and magnification coefficient of variation (CoV) of slide-level predictions.

For a specimen `s` scanned on scanners `c`, with values `v(s, c)` (logits by default):
`CoV_s = std_c v(s, c) / |mean_c v(s, c)|` (population std, ddof = 0) and `CoV = mean_s CoV_s`.
Lower is better: 0 means every scan of a specimen gets the same prediction.

A specimen whose |mean| is tiny makes its CoV explode. Such specimens are flagged (`near_zero`),
counted and reported, never dropped; the denominator is floored at `eps` so the value stays finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl

from scangen.constants import MAGNIFICATION_PAIR_SCANNER

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


def magnification_pairs(pred: pl.DataFrame, scanner: str = MAGNIFICATION_PAIR_SCANNER) -> pl.DataFrame:
    """Rows of `pred` on `scanner` at 40x or 20x for specimens having both magnifications.

    Raises ValueError naming the specimens that have only one of the two.
    """
    missing = {"specimen_id", "scanner", "magnification"} - set(pred.columns)
    if missing:
        raise ValueError(f"predictions: missing columns {sorted(missing)}")
    rows = pred.filter((pl.col("scanner") == scanner) & pl.col("magnification").is_in([40, 20]))
    n_mag = rows.group_by("specimen_id").agg(pl.col("magnification").n_unique().alias("n"))
    single = n_mag.filter(pl.col("n") < 2)["specimen_id"].to_list()
    if single:
        raise ValueError(
            f"predictions: magnification CoV needs {scanner} at both 40x and 20x; "
            f"{len(single)} specimens have one (e.g. {sorted(single)[:10]})"
        )
    return rows


def magnification_cov_per_specimen(
    pred: pl.DataFrame, *, eps: float = 1e-6, on: ValueKind = "logit", value: str = "logit"
) -> pl.DataFrame:
    """Per-specimen CoV table (as `scanner_cov_per_specimen`) over the {GT450@40x, GT450@20x} pair."""
    rows = magnification_pairs(pred)
    if rows.height == 0:
        raise ValueError(
            f"predictions: no {MAGNIFICATION_PAIR_SCANNER} 40x/20x pair to compute a magnification CoV on"
        )
    if value not in rows.columns:
        raise ValueError(f"value: column {value!r} is not in the predictions (columns {rows.columns})")
    return scanner_cov_per_specimen(rows[value].to_numpy(), rows["specimen_id"].to_numpy(), eps=eps, on=on)


def magnification_cov(
    pred: pl.DataFrame, *, eps: float = 1e-6, on: ValueKind = "logit", value: str = "logit"
) -> float:
    """Mean CoV over the {GT450@40x, GT450@20x} pair of every specimen in `pred`."""
    return float(magnification_cov_per_specimen(pred, eps=eps, on=on, value=value)["cov"].mean())
