"""One-call summary of a predictions table (the output of `scangen.train.run_experiment`).

Conventions: the evaluation rows are the multiscanner cohort's `split` (default "test"); the EGFR
AUC, per-scanner AUC, scanner CoV and flip rate use its WSIs at the primary (highest) magnification,
40x in the simulated cohort; the magnification CoV uses every scanner that scanned the same specimens
at two magnifications (GT450 40x/20x in the simulated cohort; NaN, "not available", when there is
none); the flip-rate threshold is Youden's on the primary-magnification validation WSIs (split
"val") unless given.
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


PRIMARY = "primary"


def evaluation_rows(pred: pl.DataFrame, split: str, magnification: int | str | None = PRIMARY) -> pl.DataFrame:
    """Multiscanner rows of one split of a predictions table, at one magnification when given
    ("primary": the highest magnification of the table's multiscanner rows; None: all)."""
    sel = (pl.col("cohort") == "multiscanner") & (pl.col("split") == split)
    if magnification == PRIMARY:
        magnification = pred.filter(pl.col("cohort") == "multiscanner")["magnification"].max()
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
    `scanner_cov`, `n_near_zero`, `mag_cov` (NaN, "not available", when no scanner scanned the
    split's specimens at two magnifications), `n_near_zero_mag`, `mag_cov_pairs` (the pairs used,
    e.g. ["GT450 40x/20x"]), `threshold`, `flip_rate`. `value` picks the score column (logits);
    `on="prob"` computes the CoVs on sigmoid probabilities instead.
    """
    missing = [c for c in REQUIRED_COLUMNS + (value,) if c not in pred.columns]
    if missing:
        raise ValueError(f"predictions: missing columns {missing}")
    rows = evaluation_rows(pred, split)
    if rows.height == 0:
        raise ValueError(f"predictions: no primary-magnification multiscanner rows in split {split!r}")
    y = rows["egfr"].to_numpy()
    score = rows[value].to_numpy().astype(np.float64)
    spec = rows["specimen_id"].to_numpy()
    ci = bootstrap_auc(y, score, spec, n_boot=n_boot, level=level, seed=seed)
    cov_table = scanner_cov_per_specimen(score, spec, eps=eps, on=on)

    mag_table = magnification_cov_per_specimen(evaluation_rows(pred, split, magnification=None), eps=eps, on=on,
                                               value=value)
    mag_cov = float(mag_table["cov"].mean()) if mag_table.height else float("nan")
    n_near_zero_mag = int(mag_table["near_zero"].sum())

    if threshold is None:
        val = evaluation_rows(pred, val_split)
        if val.height == 0:
            raise ValueError(
                f"predictions: no primary-magnification multiscanner rows in split {val_split!r} to choose a threshold on"
            )
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
        "mag_cov_pairs": sorted(set(mag_table["pair"].to_list())),
        "threshold": float(threshold),
        "flip_rate": flip_rate(score, spec, float(threshold)),
    }
