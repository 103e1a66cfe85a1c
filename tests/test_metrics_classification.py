"""AUC vs scikit-learn, specimen bootstrap CIs, Youden threshold, flip rate, summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from scangen.constants import SCANNERS_40X
from scangen.metrics import (
    bootstrap_auc,
    flip_rate,
    per_group_auc,
    roc_auc,
    summarize_predictions,
    youden_threshold,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=200)
    score = np.round(rng.normal(size=200) + y, 1)  # rounding creates ties
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_auc_errors() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2], [0.1, 0.2])


def _grouped(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_spec, n_scan = 60, 6
    y_spec = rng.integers(0, 2, size=n_spec)
    y = np.repeat(y_spec, n_scan)
    score = y + rng.normal(scale=0.8, size=y.size)
    groups = np.repeat(np.array([f"s{i:02d}" for i in range(n_spec)]), n_scan)
    return y, score, groups


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    y, score, groups = _grouped()
    a = bootstrap_auc(y, score, groups, n_boot=500, seed=3)
    b = bootstrap_auc(y, score, groups, n_boot=500, seed=3)
    assert a == b
    assert a.low <= a.estimate <= a.high
    assert a.estimate == pytest.approx(roc_auc_score(y, score))
    assert 0.0 < a.high - a.low < 0.5
    c = bootstrap_auc(y, score, groups, n_boot=500, seed=4)
    assert (c.low, c.high) != (a.low, a.high)


def test_bootstrap_resamples_specimens_not_scans() -> None:
    # Duplicating every scan leaves the specimen count unchanged, so the interval is unchanged.
    y, score, groups = _grouped(1)
    a = bootstrap_auc(y, score, groups, n_boot=300, seed=0)
    b = bootstrap_auc(np.tile(y, 2), np.tile(score, 2), np.tile(groups, 2), n_boot=300, seed=0)
    assert (a.low, a.high) == pytest.approx((b.low, b.high))


def test_youden_and_flip_rate() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([-2.0, -1.0, 0.5, 0.4, 1.0, 2.0])
    thr = youden_threshold(y, score)
    assert thr == pytest.approx(0.4)  # TPR 1, FPR 1/3 (lowest of the tied optima)
    specimen = ["a", "a", "b", "b", "c", "c"]
    # a: both negative; b: 0.5 and 0.4 both >= 0.4; c: both positive -> no flips
    assert flip_rate(score, specimen, thr) == 0.0
    # at 0.45, b flips
    assert flip_rate(score, specimen, 0.45) == pytest.approx(1 / 3)


def test_per_group_auc_nan_for_single_class_group() -> None:
    out = per_group_auc([0, 1, 1, 1], [0.1, 0.9, 0.2, 0.3], ["A", "A", "B", "B"])
    assert out["A"] == 1.0 and np.isnan(out["B"])


def _pred_table(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(40):
        split = "val" if i < 16 else "test"
        y = i % 2
        base = (2 * y - 1) * 1.5 + rng.normal(scale=0.5)
        scans = [(s, 40) for s in SCANNERS_40X] + [("GT450", 20)]
        for scanner, mag in scans:
            rows.append(
                {
                    "slide_id": f"{i}-{scanner}-{mag}",
                    "specimen_id": f"p{i:02d}",
                    "scanner": scanner,
                    "magnification": mag,
                    "cohort": "multiscanner",
                    "split": split,
                    "egfr": y,
                    "logit": base + rng.normal(scale=0.3),
                }
            )
    return pl.DataFrame(rows)


def test_summarize_predictions_fields_and_values() -> None:
    pred = _pred_table()
    out = summarize_predictions(pred, n_boot=200)
    test40 = pred.filter((pl.col("split") == "test") & (pl.col("magnification") == 40))
    assert out["n_specimens"] == 24 and out["n_slides"] == 24 * 6
    assert out["auc"] == pytest.approx(roc_auc_score(test40["egfr"], test40["logit"]))
    assert out["ci"][0] <= out["auc"] <= out["ci"][1]
    assert set(out["per_scanner_auc"]) == set(SCANNERS_40X)
    assert out["scanner_cov"] > 0 and out["mag_cov"] > 0
    assert 0.0 <= out["flip_rate"] <= 1.0
    assert out == summarize_predictions(pred, n_boot=200)
    with pytest.raises(ValueError, match="missing columns"):
        summarize_predictions(pred.drop("egfr"))


def test_bootstrap_on_too_few_specimens_gives_nan_bounds_and_counts() -> None:
    ci = bootstrap_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], ["a", "a", "b", "b"], n_boot=100, seed=0)
    assert ci.estimate == 1.0 and np.isnan(ci.low) and np.isnan(ci.high)
    assert 30 < ci.n_skipped < 70  # about half the resamples draw one specimen twice
