"""AUC vs scikit-learn, specimen bootstrap CIs, specimen permutation p-value, Youden threshold, flip rate,
summary."""

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
from scangen.metrics.classification import specimen_permutation_pvalue


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


def _scans(y_spec: list[int], n_scan: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scan-level labels and specimen ids: every specimen scanned `n_scan` times."""
    y = np.repeat(np.asarray(y_spec), n_scan)
    specimen = np.repeat(np.array([f"s{i:02d}" for i in range(len(y_spec))]), n_scan)
    return y, specimen


def test_permutation_pvalue_enumerates_specimen_assignments() -> None:
    # 7 specimens, 3 positive, 3 scans each: C(7, 3) = 35 assignments; a perfect ranking is the only
    # assignment reaching AUC 1, so p = 1/35 (and not 1/C(21, 9) as if scans were independent).
    y, specimen = _scans([0, 0, 0, 0, 1, 1, 1])
    score = y * 2.0 + np.tile([0.0, 0.1, 0.2], 7)
    assert specimen_permutation_pvalue(y, score, specimen) == pytest.approx(1 / 35)
    assert specimen_permutation_pvalue(y, np.ones_like(score), specimen) == 1.0  # all AUCs 0.5
    assert specimen_permutation_pvalue(y, -score, specimen) == 1.0  # worst ranking: every AUC >= it


def test_permutation_pvalue_samples_when_assignments_exceed_the_cap() -> None:
    # 16 specimens, 8 positive: C(16, 8) = 12870 > 2000, so 2000 seeded permutations are drawn and
    # a perfect ranking gives p = (1 + hits) / 2001 with hits ~ 2000 / 12870 expected.
    y, specimen = _scans([0] * 8 + [1] * 8)
    score = y + np.linspace(0.0, 0.5, y.size)
    p = specimen_permutation_pvalue(y, score, specimen, seed=0)
    assert 1 / 2001 <= p <= 3 / 2001
    assert p == specimen_permutation_pvalue(y, score, specimen, seed=0)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=y.size)
    p_noise = specimen_permutation_pvalue(y, noise, specimen, max_assignments=500, seed=1)
    assert 0.05 < p_noise <= 1.0


def test_permutation_pvalue_errors() -> None:
    y, specimen = _scans([0, 1, 1])
    with pytest.raises(ValueError, match="one EGFR label"):
        specimen_permutation_pvalue([0, 1], [0.1, 0.2], ["a", "a"])
    with pytest.raises(ValueError, match="both classes"):
        specimen_permutation_pvalue([1, 1], [0.1, 0.2], ["a", "b"])
    with pytest.raises(ValueError, match="specimen"):
        specimen_permutation_pvalue(y, np.zeros(y.size), specimen[:-1])
    with pytest.raises(ValueError, match="max_assignments"):
        specimen_permutation_pvalue(y, np.zeros(y.size), specimen, max_assignments=0)


def _delong_se(y: np.ndarray, score: np.ndarray) -> float:
    """DeLong's standard error of the AUC (independent scans)."""
    pos, neg = score[y == 1], score[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(np.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size))


@pytest.mark.parametrize("level,z", [(0.95, 1.959964), (0.90, 1.644854)])
def test_bootstrap_interval_level_matches_delong(level: float, z: float) -> None:
    """One scan per specimen, n = 600: the percentile interval's half-width is z times DeLong's SE, so a
    90% interval cannot pass as a 95% one (it would be 16% narrower)."""
    rng = np.random.default_rng(5)
    y = np.tile([0, 1], 300)
    score = rng.normal(size=600) + 0.8 * y
    ci = bootstrap_auc(y, score, np.arange(600).astype(str), n_boot=4000, level=level, seed=2)
    assert ci.level == level
    assert (ci.high - ci.low) / 2 == pytest.approx(z * _delong_se(y, score), rel=0.07)
