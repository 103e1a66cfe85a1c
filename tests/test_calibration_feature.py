"""The "feature" scenario's calibration: fm_params_feature.json reproduces the stored check values and
keeps the published order, like the image scenario's (tests/test_calibration.py)."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from scangen.paths import ROOT
from scangen.simulate.feature_effects import load_feature_params
from test_calibration import load_script

SUMMARY = ROOT / "data" / "calibration" / "feature" / "achieved_vs_published.json"
TABLE = ROOT / "data" / "calibration" / "feature" / "achieved_vs_published.parquet"


@pytest.fixture(scope="module")
def summary() -> dict:
    if not SUMMARY.exists():
        pytest.fail(f"{SUMMARY} is missing: run scripts/calibrate_simulator.py --scenario feature")
    return json.loads(SUMMARY.read_text())


def test_shipped_feature_params_are_the_calibrated_ones(summary):
    shipped = load_feature_params()
    assert summary["scenario"] == "feature"
    for model, params in summary["params"].items():
        assert shipped[model] == pytest.approx(params, abs=1e-6), model


def test_shipped_feature_params_reproduce_stored_check_values(summary):
    cs = load_script()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fresh = cs.compute_check_feature(load_feature_params())
    finally:
        torch.set_num_threads(threads)
    for model, metrics in summary["check"].items():
        for key in ("ri", "top1", "top10", "cosine"):
            assert fresh[model][key] == pytest.approx(metrics[key], abs=0.02), (model, key)


def test_feature_calibration_keeps_the_published_order_and_anchors(summary):
    cs = load_script()
    assert summary["order_holds"] and cs.order_holds(summary["achieved"])
    table = pl.read_parquet(TABLE).filter(pl.col("protocol") == "calibration")
    for row in table.iter_rows(named=True):
        assert row["published"] == cs.ANCHORS[row["model"]][row["metric"]]
        assert row["achieved"] == pytest.approx(summary["achieved"][row["model"]][row["metric"]])
    assert summary["max_abs_gap"] < 0.06
