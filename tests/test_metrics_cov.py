"""Scanner CoV: hand computation, scale invariance, near-zero handling, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.metrics import magnification_cov, scanner_cov, scanner_cov_per_specimen
from scangen.metrics.cov import magnification_cov_per_specimen


def test_cov_matches_hand_computation() -> None:
    values = [1.0, 2.0, 3.0, -4.0, -4.0]
    specimen = ["a", "a", "a", "b", "b"]
    # a: mean 2, population std sqrt(2/3); b: std 0
    expected_a = np.sqrt(2.0 / 3.0) / 2.0
    table = scanner_cov_per_specimen(values, specimen)
    assert table["specimen_id"].to_list() == ["a", "b"]
    assert table["n_scans"].to_list() == [3, 2]
    assert table["cov"][0] == pytest.approx(expected_a)
    assert table["cov"][1] == pytest.approx(0.0)
    assert scanner_cov(values, specimen) == pytest.approx(expected_a / 2.0)


def test_cov_is_scale_invariant_and_order_free() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 1.0, size=30)
    specimen = np.repeat(np.arange(10).astype(str), 3)
    base = scanner_cov(values, specimen)
    assert scanner_cov(values * 7.5, specimen) == pytest.approx(base)
    assert scanner_cov(-values, specimen) == pytest.approx(base)
    perm = rng.permutation(30)
    assert scanner_cov(values[perm], specimen[perm]) == pytest.approx(base)


def test_near_zero_specimens_are_flagged_not_dropped() -> None:
    values = [0.01, -0.01, 2.0, 2.2]
    specimen = ["z", "z", "ok", "ok"]
    table = scanner_cov_per_specimen(values, specimen, eps=1e-6)
    assert table.height == 2
    flags = dict(zip(table["specimen_id"], table["near_zero"]))
    assert flags == {"ok": False, "z": True}
    # mean exactly zero: denominator floored at eps, value finite and huge
    cov_z = table.filter(pl.col("specimen_id") == "z")["cov"][0]
    assert np.isfinite(cov_z) and cov_z == pytest.approx(0.01 / 1e-6)


def test_probability_variant_uses_sigmoid() -> None:
    logits = np.array([0.0, 2.0])
    probs = 1 / (1 + np.exp(-logits))
    assert scanner_cov(logits, ["a", "a"], on="prob") == pytest.approx(probs.std() / probs.mean())
    with pytest.raises(ValueError, match="on"):
        scanner_cov(logits, ["a", "a"], on="rank")  # type: ignore[arg-type]


def test_single_scan_specimen_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least two scans.*lonely"):
        scanner_cov([1.0, 2.0, 3.0], ["a", "a", "lonely"])
    with pytest.raises(ValueError, match="equal lengths"):
        scanner_cov([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        scanner_cov([1.0, np.nan], ["a", "a"])


def test_magnification_cov_uses_gt450_pair_only() -> None:
    pred = pl.DataFrame(
        {
            "specimen_id": ["a", "a", "a", "b", "b"],
            "scanner": ["GT450", "GT450", "AT2", "GT450", "GT450"],
            "magnification": [40, 20, 40, 40, 20],
            "logit": [1.0, 3.0, 100.0, 2.0, 2.0],
        }
    )
    assert magnification_cov(pred) == pytest.approx((1.0 / 2.0 + 0.0) / 2.0)
    # pairs are found in the data: a specimen scanned at one magnification only is left out of the pair
    assert magnification_cov(pred.filter(~((pl.col("specimen_id") == "b") & (pl.col("magnification") == 20)))) == 0.5
    table = magnification_cov_per_specimen(pred, on="prob")
    assert table["specimen_id"].to_list() == ["a", "b"] and table["n_scans"].to_list() == [2, 2]
    assert float(table["cov"].mean()) == pytest.approx(magnification_cov(pred, on="prob"))
    assert np.isnan(magnification_cov(pred.filter(pl.col("scanner") == "AT2")))  # no pair: not available
    with pytest.raises(ValueError, match="column 'prob' is not in the predictions"):
        magnification_cov_per_specimen(pred, value="prob")


def test_median_cov_and_within_sd_known_answer():
    from scangen.metrics import median_scanner_cov, within_specimen_sd
    # specimen a: logits 1, 3 -> mean 2, std 1, cov 0.5; b: -2, -2 -> cov 0; c: 0.5, 1.5 -> std 0.5, cov 0.5
    values = [1.0, 3.0, -2.0, -2.0, 0.5, 1.5]
    spec = ["a", "a", "b", "b", "c", "c"]
    assert median_scanner_cov(values, spec) == pytest.approx(0.5)
    assert within_specimen_sd(values, spec) == pytest.approx((1.0 + 0.0 + 0.5) / 3)
