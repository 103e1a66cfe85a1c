"""Magnification CoV over the magnification pairs found in the data (any scanner, any magnifications)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scangen.metrics import magnification_cov
from scangen.metrics.cov import magnification_cov_available, magnification_cov_per_specimen, magnification_pairs
from scangen.scan_labels import magnification_pairs_of


def _pred() -> pl.DataFrame:
    # S210 scans a, b at 40x and 20x; CS2 scans a at 25x and 10x and b at 25x only; X only at 40x
    return pl.DataFrame({
        "specimen_id": ["a", "a", "b", "b", "a", "a", "b", "a", "b"],
        "scanner": ["S210", "S210", "S210", "S210", "CS2", "CS2", "CS2", "X", "X"],
        "magnification": [40, 20, 40, 20, 25, 10, 25, 40, 40],
        "logit": [1.0, 3.0, 2.0, 2.0, 4.0, 2.0, 9.0, 7.0, 7.0],
    })


def test_pairs_are_detected_from_the_data() -> None:
    pairs = magnification_pairs_of(_pred())
    assert [(p.scanner, p.high, p.low, p.n_specimens, p.n_unpaired) for p in pairs] == [
        ("CS2", 25, 10, 1, 1), ("S210", 40, 20, 2, 0)]
    assert magnification_pairs(_pred(), scanner="CS2")["pair"].unique().to_list() == ["CS2 25x/10x"]


def test_cov_pools_every_pair_and_reports_not_available() -> None:
    table = magnification_cov_per_specimen(_pred())
    # S210: a -> std 1 / mean 2 = 0.5, b -> 0; CS2: a -> std 1 / mean 3
    assert table.sort("pair", "specimen_id")["cov"].to_list() == pytest.approx([1 / 3, 0.5, 0.0])
    assert magnification_cov(_pred()) == pytest.approx((1 / 3 + 0.5 + 0.0) / 3)
    single = _pred().filter(pl.col("scanner") == "X")
    assert not magnification_cov_available(single) and np.isnan(magnification_cov(single))
    assert magnification_cov_per_specimen(single).height == 0


def test_summary_on_a_25x_store_without_a_pair_reports_mag_cov_not_available() -> None:
    from scangen.metrics import summarize_predictions

    rng = np.random.default_rng(0)
    rows = []
    for s in range(12):
        split = ("val", "test")[s % 2]
        for scanner in ("CS2", "S210"):
            rows.append({"slide_id": f"{s}-{scanner}", "specimen_id": f"p{s}", "scanner": scanner, "magnification": 25,
                         "cohort": "multiscanner", "split": split, "egfr": (s // 2) % 2,
                         "logit": float((s // 2) % 2 + rng.normal(0, 0.3))})
    out = summarize_predictions(pl.DataFrame(rows), n_boot=20)
    assert out["n_slides"] == 12 and np.isnan(out["mag_cov"]) and out["mag_cov_pairs"] == []
    with_pair = pl.DataFrame(rows + [{**rows[2], "slide_id": "x", "magnification": 10, "logit": 0.0}])
    assert summarize_predictions(with_pair, n_boot=20)["mag_cov_pairs"] == ["CS2 25x/10x"]
