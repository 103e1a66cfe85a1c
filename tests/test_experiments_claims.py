"""The claims table's verdicts on hand-built result documents."""

from __future__ import annotations

import polars as pl
import pytest

from scangen.experiments import claims as C


def _p(diff, lo, hi):
    return {"baseline": 0.5, "scangen": None if diff is None else 0.5 + diff, "diff": diff, "diff_lo": lo, "diff_hi": hi, "verdict": "x", "n_pairs": 5}


DOCS = {
    "scanner_bias": {"fms": {"a": {"scanner_predictability": 0.9, "predictability_chance": 1 / 6},
                             "b": {"scanner_predictability": 0.2, "predictability_chance": 1 / 6}}},
    "table1": {"fms": {
        "a": {"paired": {"scanner_cov": _p(-0.2, -0.3, -0.1), "median_cov": _p(0.1, 0.05, 0.2), "auc": _p(0.0, -0.01, 0.01),
                         "mag_cov": _p(0.0, -0.1, 0.1)}},
        "b": {"paired": {"scanner_cov": _p(0.0, -0.1, 0.1), "median_cov": _p(-0.1, -0.2, -0.05), "auc": _p(-0.05, -0.08, -0.02),
                         "mag_cov": _p(None, None, None)}}}},
    "ablation": {
        "size_contrasts": [{"metric": "scanner_cov", "contrast": "slope", "estimate": -0.05, "lo": -0.08, "hi": -0.02},
                           {"metric": "scanner_cov", "contrast": "5-4", "estimate": -0.04, "lo": -0.07, "hi": -0.01},
                           {"metric": "scanner_cov", "contrast": "6-5", "estimate": -0.01, "lo": -0.05, "hi": 0.03}],
        "paired_by_size": {"3": {"scanner_cov": _p(0.02, -0.01, 0.05)}},
        "chance_tables": {
            "best": [{"item": "GT450", "observed": 4, "chance_mean": 2.33, "chance_upper": 4, "p_value": 0.09, "exceeds": False},
                     {"item": "S360MD", "observed": 1, "chance_mean": 2.33, "chance_upper": 4, "p_value": 0.95, "exceeds": False}],
            "worst": [{"item": "AT2+GT450", "observed": 3, "chance_mean": 0.4, "chance_upper": 2, "p_value": 0.004, "exceeds": True}]}},
    "mil_table": None,
}


def test_verdicts_follow_the_declared_rules():
    t = C.claims_table({"image": DOCS}, n_wsi={"image": 300})
    v = {(r["claim_id"], r["subject"]): r["verdict"] for r in t.iter_rows(named=True)}
    assert v[("fm_scanner_sensitive", "a")] == "reproduced"
    assert v[("fm_scanner_sensitive", "b")] == "inconclusive"  # 0.2 vs 1/6 with n = 300: the interval spans 0
    assert v[("cov_lower", "a")] == "reproduced" and v[("cov_lower", "b")] == "inconclusive"
    assert v[("median_cov_lower", "a")] == "not reproduced" and v[("median_cov_lower", "b")] == "reproduced"
    assert v[("auc_kept", "a")] == "reproduced" and v[("auc_kept", "b")] == "not reproduced"
    assert v[("auc_improved", "a")] == "inconclusive" and v[("auc_improved", "b")] == "not reproduced"
    assert v[("mag_cov_lower", "b")] == "inconclusive"  # no 20x scans: undefined interval
    assert v[("gain_grows", "sizes")] == "reproduced"
    assert v[("converges_at_five", "6 vs 5 scanners")] == "reproduced"
    assert v[("three_scanners_help", "3 scanners")] == "inconclusive"
    assert v[("best_gt450", "GT450")] == "inconclusive"  # above the chance mean, not beyond chance
    assert v[("best_hamamatsu", "S360MD")] == "not reproduced"
    assert v[("worst_at2_gt450", "AT2+GT450")] == "reproduced"
    assert v[("mil_cov_lower", "-")] == "not run"
    assert t["claim_id"].unique(maintain_order=True).to_list() == [c for c in C.CLAIMS]


def test_scenarios_are_reported_side_by_side_and_summarised():
    t = C.claims_table({"image": DOCS, "feature": {"table1": DOCS["table1"]}})
    assert t["scenario"].unique(maintain_order=True).to_list() == ["image", "feature"]
    s = C.claims_summary(t)
    assert s["image"]["cov_lower"] == {"reproduced": 1, "inconclusive": 1}
    assert s["feature"]["gain_grows"] == {"not run": 1}


def test_rule_helpers():
    assert C.change_verdict(-0.2, -0.1) == "reproduced" and C.change_verdict(0.1, 0.2) == "not reproduced"
    assert C.change_verdict(0.1, 0.2, "higher") == "reproduced" and C.change_verdict(-0.1, 0.2) == "inconclusive"
    assert C.noninferiority_verdict(-0.019, 0.1) == "reproduced"
    assert C.noninferiority_verdict(-0.03, -0.001) == "not reproduced"
    assert C.noninferiority_verdict(-0.03, 0.01) == "inconclusive"


def test_claims_display_is_text():
    shown = C.claims_display(C.claims_table({"image": DOCS}, n_wsi={"image": 300}))
    assert shown.columns == ["scenario", "claim", "subject", "statistic", "measured [95% CI]", "verdict"]
    row = shown.filter(pl.col("claim") == C.CLAIMS["cov_lower"]).row(0, named=True)
    assert row["measured [95% CI]"] == "-0.200 [-0.30, -0.10]" and row["verdict"] == "reproduced"
