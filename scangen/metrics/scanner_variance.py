"""Where a model's scanner disagreement comes from: specimen, scanner offset and residual parts.

The paper's scanner CoV, `mean_s std_c l(s,c) / |mean_c l(s,c)|`, mixes two things: how much a
specimen's logits move across scanners (numerator) and how far its mean logit sits from 0
(denominator). A model can lower CoV by moving its intercept away from 0 without agreeing better
across scanners, and one specimen with a mean logit near 0 can dominate the average. This module
splits the logits `l(s,c)` of specimens scanned on several scanners into

    l(s,c) = m_s + o_c + r(s,c),    m_s = mean_c l(s,c),    o_c = mean_s (l(s,c) - m_s)

- `between_sd`: std over specimens of m_s (the spread that carries the task signal);
- `within_sd`: mean over specimens of std_c l(s,c) (the CoV numerator);
- `offset_sd`: std over scanners of o_c (a scanner shifting every specimen the same way, what a
  per-scanner recalibration could remove);
- `residual_sd`: root mean square of r(s,c) (specimen-specific scanner effects);
- `scanner_share = within_sd / between_sd`: scanner spread relative to the spread between specimens,
  unchanged when all logits are scaled or shifted and never blown up by a mean near 0;
- `median_abs_mean`: the typical CoV denominator.

It is a diagnostic reported beside CoV, not a replacement for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import polars as pl

from scangen.metrics.cov import ValueKind, _as_values


@dataclass(frozen=True)
class ScannerVariance:
    """Decomposition of values over specimens x scanners (see module docstring)."""

    n_specimens: int
    n_scanners: int
    between_sd: float
    within_sd: float
    offset_sd: float
    residual_sd: float
    scanner_share: float
    median_abs_mean: float
    offsets: dict[str, float]

    def as_row(self) -> dict[str, float | int]:
        """The scalar fields (offsets left out), for a results table."""
        return {k: v for k, v in asdict(self).items() if k != "offsets"}


def scanner_variance(
    values: Sequence[float] | np.ndarray,
    specimen: Sequence[str] | np.ndarray,
    scanner: Sequence[str] | np.ndarray,
    *,
    on: ValueKind = "logit",
) -> ScannerVariance:
    """Decompose one value per scan (logits, or probabilities with `on="prob"`) by specimen and scanner.

    Specimens may miss some scanners (offsets and residuals use the scans present). Repeated scans of
    one specimen on one scanner (rescans) are averaged first, so each scanner counts once per
    specimen. Raises ValueError when lengths differ, a specimen has scans on fewer than two scanners,
    or fewer than two specimens are given.
    """
    vals = _as_values(values, on)
    spec = np.asarray(specimen).astype(str).reshape(-1)
    scan = np.asarray(scanner).astype(str).reshape(-1)
    if not vals.shape[0] == spec.shape[0] == scan.shape[0]:
        raise ValueError(
            f"values, specimen and scanner: expected equal lengths, got {vals.shape[0]}, {spec.shape[0]}, {scan.shape[0]}"
        )
    frame = (
        pl.DataFrame({"specimen": spec, "scanner": scan, "v": vals})
        .sort(["specimen", "scanner", "v"])  # a fixed order makes every sum below order-free
        .group_by(["specimen", "scanner"], maintain_order=True).agg(pl.col("v").mean())
    )
    per_spec = frame.group_by("specimen").agg(pl.len().alias("n"), pl.col("v").mean().alias("m"),
                                              pl.col("v").std(ddof=0).alias("sd")).sort("specimen")
    few = per_spec.filter(pl.col("n") < 2)
    if few.height:
        raise ValueError(f"specimen: expected scans on at least two scanners per specimen, {few.height} have one "
                         f"(e.g. {few['specimen'][0]!r})")
    if per_spec.height < 2:
        raise ValueError(f"specimen: expected at least two specimens, got {per_spec.height}")
    dev = frame.join(per_spec.select("specimen", "m"), on="specimen", maintain_order="left").with_columns((pl.col("v") - pl.col("m")).alias("d"))
    offsets = dev.group_by("scanner").agg(pl.col("d").mean().alias("o")).sort("scanner")
    resid = dev.join(offsets, on="scanner", maintain_order="left").select(pl.col("d") - pl.col("o"))
    means = per_spec["m"].to_numpy()
    between = float(means.std(ddof=0))
    within = float(per_spec["sd"].mean())
    return ScannerVariance(
        n_specimens=per_spec.height,
        n_scanners=offsets.height,
        between_sd=between,
        within_sd=within,
        offset_sd=float(offsets["o"].to_numpy().std(ddof=0)),
        residual_sd=float(np.sqrt(np.mean(resid.to_series().to_numpy() ** 2))),
        scanner_share=within / max(between, 1e-12),
        median_abs_mean=float(np.median(np.abs(means))),
        offsets=dict(zip(offsets["scanner"].to_list(), offsets["o"].to_list())),
    )
