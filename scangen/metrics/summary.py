"""One-call summary of a predictions table (the output of `scangen.train.run_experiment`).

Conventions: the evaluation rows are the multiscanner cohort's `split` (default "test"); the EGFR
AUC, per-scanner AUC, scanner CoV and flip rate use its 40x WSIs; the magnification CoV uses the
GT450 40x/20x pair; the flip-rate threshold is Youden's on the 40x validation WSIs (split "val")
unless given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from scangen.metrics.classification import (
    bootstrap_auc,
    flip_rate,
    per_group_auc,
    youden_threshold,
)
from scangen.metrics.cov import (
    ValueKind,
    magnification_cov_per_specimen,
    scanner_cov_per_specimen,
)

REQUIRED_COLUMNS = ("slide_id", "specimen_id", "scanner", "magnification", "cohort", "split", "egfr", "logit")


def evaluation_rows(pred: pl.DataFrame, split: str, magnification: int | None = 40) -> pl.DataFrame:
    """Multiscanner rows of one split of a predictions table (and of one magnification when given)."""
    sel = (pl.col("cohort") == "multiscanner") & (pl.col("split") == split)
    if magnification is not None:
        sel = sel & (pl.col("magnification") == magnification)
    return pred.filter(sel)


def summarize_predictions(
    pred: pl.DataFrame,
    *,
    split: str = "test",
    val_split: str = "val",
    value: str = "logit",
    on: ValueKind = "logit",
    eps: float = 1e-6,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Headline metrics of one experiment's predictions.

    Returns a dict: `n_specimens`, `n_slides` (40x evaluation WSIs), `auc`, `ci` (low, high),
    `auc_ci_low`, `auc_ci_high`, `n_boot_skipped`, `per_scanner_auc` {scanner: auc},
    `scanner_cov`, `n_near_zero`, `mag_cov` (NaN when the split has no 20x scans),
    `n_near_zero_mag`, `threshold`, `flip_rate`. `value` picks the score column (logits);
    `on="prob"` computes the CoVs on sigmoid probabilities instead.
    """
    missing = [c for c in REQUIRED_COLUMNS + (value,) if c not in pred.columns]
    if missing:
        raise ValueError(f"predictions: missing columns {missing}")
    rows = evaluation_rows(pred, split)
    if rows.height == 0:
        raise ValueError(f"predictions: no 40x multiscanner rows in split {split!r}")
    y = rows["egfr"].to_numpy()
    score = rows[value].to_numpy().astype(np.float64)
    spec = rows["specimen_id"].to_numpy()
    ci = bootstrap_auc(y, score, spec, n_boot=n_boot, level=level, seed=seed)
    cov_table = scanner_cov_per_specimen(score, spec, eps=eps, on=on)

    mag_rows = evaluation_rows(pred, split, magnification=None)
    if (mag_rows["magnification"] == 20).any():
        mag_table = magnification_cov_per_specimen(mag_rows, eps=eps, on=on, value=value)
        mag_cov, n_near_zero_mag = float(mag_table["cov"].mean()), int(mag_table["near_zero"].sum())
    else:
        mag_cov, n_near_zero_mag = float("nan"), 0

    if threshold is None:
        val = evaluation_rows(pred, val_split)
        if val.height == 0:
            raise ValueError(f"predictions: no 40x multiscanner rows in split {val_split!r} to choose a threshold on")
        threshold = youden_threshold(val["egfr"].to_numpy(), val[value].to_numpy())

    return {
        "n_specimens": int(np.unique(spec).size),
        "n_slides": int(rows.height),
        "auc": ci.estimate,
        "ci": (ci.low, ci.high),
        "auc_ci_low": ci.low,
        "auc_ci_high": ci.high,
        "n_boot_skipped": ci.n_skipped,
        "per_scanner_auc": per_group_auc(y, score, rows["scanner"].to_numpy()),
        "scanner_cov": float(cov_table["cov"].mean()),
        "n_near_zero": int(cov_table["near_zero"].sum()),
        "mag_cov": mag_cov,
        "n_near_zero_mag": n_near_zero_mag,
        "threshold": float(threshold),
        "flip_rate": flip_rate(score, spec, float(threshold)),
    }
