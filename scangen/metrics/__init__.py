"""Evaluation metrics: scanner/magnification CoV, EGFR AUC with specimen bootstrap CIs, flip rate,
and `summarize_predictions` for a predictions table."""

from scangen.metrics.classification import (
    BootstrapCI,
    bootstrap_auc,
    flip_rate,
    per_group_auc,
    roc_auc,
    specimen_permutation_pvalue,
    youden_threshold,
)
from scangen.metrics.cov import (
    NEAR_ZERO_TOL,
    NEAR_ZERO_TOL_PROB,
    magnification_cov,
    magnification_pairs,
    median_scanner_cov,
    scanner_cov,
    scanner_cov_per_specimen,
    within_specimen_sd,
)
from scangen.metrics.summary import evaluation_rows, summarize_predictions

__all__ = [
    "BootstrapCI",
    "NEAR_ZERO_TOL",
    "NEAR_ZERO_TOL_PROB",
    "bootstrap_auc",
    "evaluation_rows",
    "flip_rate",
    "magnification_cov",
    "magnification_pairs",
    "median_scanner_cov",
    "per_group_auc",
    "roc_auc",
    "scanner_cov",
    "scanner_cov_per_specimen",
    "specimen_permutation_pvalue",
    "summarize_predictions",
    "within_specimen_sd",
    "youden_threshold",
]
