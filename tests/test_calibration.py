"""The shipped simulator calibration: fm_params.json reproduces the stored achieved values.

Recomputes the cheap "check" protocol of scripts/calibrate_simulator.py (a 16-specimen cohort,
seed 1) with the shipped fm_params.json and compares with data/calibration/achieved_vs_published.json,
which the script wrote together with fm_params.json.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import polars as pl
import pytest
import torch

from scangen.paths import ROOT
from scangen.simulate import load_fm_params

SCRIPT = ROOT / "scripts" / "calibrate_simulator.py"
SUMMARY = ROOT / "data" / "calibration" / "achieved_vs_published.json"
TABLE = ROOT / "data" / "calibration" / "achieved_vs_published.parquet"


def load_script():
    """Import scripts/calibrate_simulator.py as a module (registered so dataclasses resolve)."""
    if "calibrate_simulator" in sys.modules:
        return sys.modules["calibrate_simulator"]
    spec = importlib.util.spec_from_file_location("calibrate_simulator", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibrate_simulator"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def summary() -> dict:
    if not SUMMARY.exists():
        pytest.fail(f"{SUMMARY} is missing: run scripts/calibrate_simulator.py")
    return json.loads(SUMMARY.read_text())


def test_shipped_params_are_the_calibrated_ones(summary):
    shipped = load_fm_params()
    for model, params in summary["params"].items():
        for key, value in params.items():
            assert shipped[model][key] == pytest.approx(value, abs=1e-6), (model, key)


def test_shipped_params_reproduce_stored_check_values(summary):
    cs = load_script()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fresh = cs.compute_check(load_fm_params())
    finally:
        torch.set_num_threads(threads)
    for model, metrics in summary["check"].items():
        for key in ("ri", "top1", "top10", "cosine"):
            assert fresh[model][key] == pytest.approx(metrics[key], abs=0.02), (model, key)


def test_table_matches_summary_and_anchors(summary):
    cs = load_script()
    table = pl.read_parquet(TABLE)
    assert set(table["protocol"]) == {"calibration", "check"}
    cal = table.filter(pl.col("protocol") == "calibration")
    for row in cal.iter_rows(named=True):
        assert row["published"] == cs.ANCHORS[row["model"]][row["metric"]]
        assert row["achieved"] == pytest.approx(summary["achieved"][row["model"]][row["metric"]])
    assert summary["order_holds"] == cs.order_holds(summary["achieved"])


def test_published_order_holds(summary):
    cs = load_script()
    achieved = summary["achieved"]
    models = list(cs.ANCHORS)
    ri = [achieved[m]["ri"] for m in models]
    top10 = [achieved[m]["top10"] for m in models if cs.ANCHORS[m]["top10"] is not None]
    assert ri == sorted(ri), f"RI order broken: {dict(zip(models, ri))}"
    assert top10 == sorted(top10), f"top-10 order broken: {top10}"
