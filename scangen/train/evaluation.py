"""Evaluation rows and the per-evaluation metrics of the training history.

Model selection reads only the validation split; the test split may be traced in the history for
display (`TrainConfig.trace_test`) but no selection code reads it. Both use the multiscanner WSIs at
the store's primary (highest) magnification, the scans the scanner CoV is defined on.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from scangen.metrics import median_scanner_cov, roc_auc, scanner_cov, within_specimen_sd
from scangen.metrics.scanner_variance import scanner_variance


def primary_magnification(slides: pl.DataFrame) -> int:
    """Highest magnification among the multiscanner WSIs (40 in the simulated cohort)."""
    rows = slides.filter(pl.col("cohort") == "multiscanner")
    if rows.height == 0:
        raise ValueError("slides: no multiscanner WSIs; cannot evaluate scanner agreement")
    return int(rows["magnification"].max())


def split_positions(slides: pl.DataFrame, split: str) -> np.ndarray:
    """Bag positions (int64) of the primary-magnification multiscanner WSIs of `split`."""
    mag = primary_magnification(slides)
    sel = (pl.col("cohort") == "multiscanner") & (pl.col("split") == split) & (pl.col("magnification") == mag)
    pos = slides.with_row_index("_pos").filter(sel)["_pos"].to_numpy().astype(np.int64)
    if pos.size == 0:
        raise ValueError(f"{split} split: no {mag}x multiscanner WSIs in split {split!r}")
    return pos


def validation_positions(slides: pl.DataFrame) -> np.ndarray:
    """Bag positions of the primary-magnification multiscanner validation WSIs (selection uses only these)."""
    return split_positions(slides, "val")


def bce(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits (numerically stable form)."""
    return float(np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))))


def split_metrics(logits: np.ndarray, rows: pl.DataFrame, prefix: str) -> dict[str, float]:
    """Metrics of one split's logits (n,) for the rows (n) they belong to, keys prefixed `prefix_`.

    auc, loss (BCE), cov (paper's mean logit CoV), pcov (CoV of probabilities), median_cov,
    within_sd (mean within-specimen logit SD) and share (within_sd / between-specimen SD).
    """
    y = rows["egfr"].to_numpy().astype(np.float64)
    spec = rows["specimen_id"].to_numpy()
    return {
        f"{prefix}_auc": roc_auc(y, logits),
        f"{prefix}_loss": bce(logits, y),
        f"{prefix}_cov": scanner_cov(logits, spec),
        f"{prefix}_pcov": scanner_cov(logits, spec, on="prob"),
        f"{prefix}_median_cov": median_scanner_cov(logits, spec),
        f"{prefix}_within_sd": within_specimen_sd(logits, spec),
        f"{prefix}_share": scanner_variance(logits, spec, rows["scanner"].to_numpy()).scanner_share,
    }


TEST_TRACE_COLUMNS = ("test_auc", "test_cov", "test_median_cov", "test_within_sd")
"""History columns added by `TrainConfig.trace_test` (display only)."""


def test_trace(logits: np.ndarray, rows: pl.DataFrame) -> dict[str, float]:
    """The traced test metrics (TEST_TRACE_COLUMNS) of test-split logits."""
    full = split_metrics(logits, rows, "test")
    return {k: full[k] for k in TEST_TRACE_COLUMNS}
