"""The claims table: each claim of the paper beside the statistic we measured, its interval and a verdict.

Input: per data-generating scenario, the result documents of the notebooks (`scanner_bias`, `table1`,
`ablation`, `mil_table` JSONs; a missing one gives "not run" rows). One row per claim and subject (an FM,
a head, a subset size, a scanner). Verdicts, fixed here before any result was read:
- changes with a paired interval (`scangen.metrics.paired`): "reproduced" when the interval lies on the
  paper's side of zero, "not reproduced" when it lies on the other side, "inconclusive" when it spans 0;
- "AUC kept or improved": non-inferiority with margin AUC_MARGIN: "reproduced" when the interval's lower
  end is above -AUC_MARGIN, "not reproduced" when its upper end is below 0, otherwise "inconclusive";
- scanners / pairs in the best or worst subsets: against the chance distribution of the count
  (`paired.count_reference`): "reproduced" when p < 0.05 (count above the chance 95% quantile),
  "not reproduced" when the count is at most its chance mean, otherwise "inconclusive";
- "the gain converges at five scanners": "reproduced" when the change still falls from 4 to 5 scanners
  (interval below 0) and the 5 -> 6 step's interval spans 0 (no further change detected; absence of
  evidence, said so in the statistic), "not reproduced" when 5 -> 6 still lowers the CoV or 4 -> 5
  raises it, otherwise "inconclusive";
- "FMs are scanner-sensitive": scanner predictability (balanced accuracy of a specimen-grouped linear
  probe) minus chance, with a normal-approximation interval over the `n_wsi` WSIs (optimistic: scans of
  one specimen are correlated); "reproduced" when the interval lies above 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from scangen.metrics.paired import verdict as interval_verdict

AUC_MARGIN = 0.02
CLAIMS: dict[str, str] = {
    "fm_scanner_sensitive": "FMs are scanner-sensitive",
    "cov_lower": "ScanGen lowers the scanner CoV (each FM)",
    "median_cov_lower": "ScanGen lowers the scanner CoV, robust form: median CoV (each FM)",
    "auc_kept": f"ScanGen keeps or improves EGFR AUC (each FM; non-inferiority margin {AUC_MARGIN})",
    "auc_improved": "ScanGen improves EGFR AUC (each FM)",
    "mag_cov_lower": "ScanGen lowers the magnification CoV (each FM)",
    "gain_grows": "The CoV gain grows with the number of ScanGen scanners",
    "converges_at_five": "The gain converges at five scanners",
    "three_scanners_help": "Three scanners already lower the CoV",
    "best_gt450": "Leica GT450 is in the best subsets",
    "best_hamamatsu": "Hamamatsu S360MD is in the best subsets",
    "worst_at2_gt450": "The AT2 + GT450 pair is in the worst subsets",
    "mil_cov_lower": "ScanGen lowers the scanner CoV for every MIL head",
    "mil_auc_kept": f"ScanGen keeps or improves AUC for every MIL head (margin {AUC_MARGIN})",
}
"""Claim id -> the paper's claim, in table order."""
COLUMNS = {"scenario": pl.String, "claim_id": pl.String, "claim": pl.String, "subject": pl.String,
           "statistic": pl.String, "estimate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "verdict": pl.String}


def change_verdict(lo: float, hi: float, expected: str = "lower") -> str:
    """Verdict of a paired change whose claimed direction is `expected` ("lower" or "higher")."""
    v = interval_verdict(lo, hi)
    return "inconclusive" if v == "inconclusive" else ("reproduced" if v == expected else "not reproduced")


def noninferiority_verdict(lo: float, hi: float, margin: float = AUC_MARGIN) -> str:
    """"reproduced" when lo > -margin, "not reproduced" when hi < 0, otherwise "inconclusive"."""
    if math.isfinite(lo) and lo > -margin:
        return "reproduced"
    if math.isfinite(hi) and hi < 0:
        return "not reproduced"
    return "inconclusive"


def count_verdict(row: Mapping[str, Any]) -> str:
    """Verdict of an over-representation claim from a chance-table row (`CountReference.table`)."""
    if row["exceeds"]:
        return "reproduced"
    return "not reproduced" if row["observed"] <= row["chance_mean"] else "inconclusive"


def _row(scenario: str, cid: str, subject: str, statistic: str, est: float | None, lo: float | None,
         hi: float | None, verdict: str) -> dict[str, Any]:
    f = lambda x: None if x is None or not math.isfinite(float(x)) else float(x)  # noqa: E731
    return {"scenario": scenario, "claim_id": cid, "claim": CLAIMS[cid], "subject": subject, "statistic": statistic,
            "estimate": f(est), "lo": f(lo), "hi": f(hi), "verdict": verdict}


def _paired_rows(scenario: str, cid: str, entries: Mapping[str, Any], metric: str, label: str,
                 kind: str = "change") -> list[dict[str, Any]]:
    rows = []
    for subject, entry in entries.items():
        p = (entry.get("paired") or {}).get(metric)
        if p is None:
            rows.append(_row(scenario, cid, str(subject), label, None, None, None, "not run"))
            continue
        lo, hi = (math.nan if p["diff_lo"] is None else p["diff_lo"]), (math.nan if p["diff_hi"] is None else p["diff_hi"])
        v = noninferiority_verdict(lo, hi) if kind == "noninferiority" else change_verdict(lo, hi, kind if kind in ("lower", "higher") else "lower")
        rows.append(_row(scenario, cid, str(subject), label, p["diff"], lo, hi, v))
    return rows


def _not_run(scenario: str, cids: list[str], what: str) -> list[dict[str, Any]]:
    return [_row(scenario, c, "-", f"{what} not run", None, None, None, "not run") for c in cids]


def scenario_claims(scenario: str, docs: Mapping[str, Mapping[str, Any] | None], n_wsi: int | None = None) -> list[dict[str, Any]]:
    """Claim rows of one scenario from its result documents (see module docstring)."""
    rows: list[dict[str, Any]] = []
    sb = docs.get("scanner_bias")
    if sb:
        for fm, r in sb["fms"].items():
            acc, chance = r.get("scanner_predictability"), r.get("predictability_chance")
            if acc is None or chance is None:
                continue
            se = math.sqrt(acc * (1 - acc) / n_wsi) if n_wsi else math.nan
            lo, hi = acc - chance - 1.96 * se, acc - chance + 1.96 * se
            rows.append(_row(scenario, "fm_scanner_sensitive", fm, "scanner predictability - chance (balanced accuracy)",
                             acc - chance, lo, hi, change_verdict(lo, hi, "higher")))
    else:
        rows += _not_run(scenario, ["fm_scanner_sensitive"], "scanner bias (02)")
    t1 = docs.get("table1")
    if t1:
        fms = t1["fms"]
        rows += _paired_rows(scenario, "cov_lower", fms, "scanner_cov", "paired change of the scanner CoV", "lower")
        rows += _paired_rows(scenario, "median_cov_lower", fms, "median_cov", "paired change of the median CoV", "lower")
        rows += _paired_rows(scenario, "auc_kept", fms, "auc", "paired change of the AUC", "noninferiority")
        rows += _paired_rows(scenario, "auc_improved", fms, "auc", "paired change of the AUC", "higher")
        rows += _paired_rows(scenario, "mag_cov_lower", fms, "mag_cov", "paired change of the magnification CoV", "lower")
    else:
        rows += _not_run(scenario, ["cov_lower", "median_cov_lower", "auc_kept", "auc_improved", "mag_cov_lower"], "Table 1 (04)")
    rows += _ablation_rows(scenario, docs.get("ablation"))
    mil = docs.get("mil_table")
    if mil:
        rows += _paired_rows(scenario, "mil_cov_lower", mil["heads"], "scanner_cov", "paired change of the scanner CoV", "lower")
        rows += _paired_rows(scenario, "mil_auc_kept", mil["heads"], "auc", "paired change of the AUC", "noninferiority")
    else:
        rows += _not_run(scenario, ["mil_cov_lower", "mil_auc_kept"], "Table 2 (06)")
    return rows


def _ablation_rows(scenario: str, ab: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    cids = ["gain_grows", "converges_at_five", "three_scanners_help", "best_gt450", "best_hamamatsu", "worst_at2_gt450"]
    if not ab:
        return _not_run(scenario, cids, "ablation (05)")
    rows = []
    contrasts = {c["contrast"]: c for c in ab.get("size_contrasts", []) if c["metric"] == "scanner_cov"}
    slope = contrasts.get("slope")
    if slope:
        rows.append(_row(scenario, "gain_grows", "sizes", "slope of the paired CoV change per added scanner",
                         slope["estimate"], slope["lo"], slope["hi"], change_verdict(_num(slope["lo"]), _num(slope["hi"]), "lower")))
    step54, step65 = contrasts.get("5-4"), contrasts.get("6-5")
    if step54 and step65:
        v54, v65 = interval_verdict(_num(step54["lo"]), _num(step54["hi"])), interval_verdict(_num(step65["lo"]), _num(step65["hi"]))
        v = ("reproduced" if v54 == "lower" and v65 == "inconclusive"
             else "not reproduced" if v65 == "lower" or v54 == "higher" else "inconclusive")
        rows.append(_row(scenario, "converges_at_five", "6 vs 5 scanners",
                         f"change 5->6 scanners (4->5: {step54['estimate']:+.3f} [{_fmt(step54['lo'])}, {_fmt(step54['hi'])}]; "
                         "an interval spanning 0 means no further change was detected)",
                         step65["estimate"], step65["lo"], step65["hi"], v))
    three = (ab.get("paired_by_size") or {}).get("3", (ab.get("paired_by_size") or {}).get(3))
    if three and "scanner_cov" in three:
        p = three["scanner_cov"]
        rows.append(_row(scenario, "three_scanners_help", "3 scanners", "paired change of the scanner CoV",
                         p["diff"], p["diff_lo"], p["diff_hi"], change_verdict(_num(p["diff_lo"]), _num(p["diff_hi"]), "lower")))
    tables = ab.get("chance_tables") or {}
    for cid, side, item in (("best_gt450", "best", "GT450"), ("best_hamamatsu", "best", "S360MD"),
                            ("worst_at2_gt450", "worst", "AT2+GT450")):
        match = [r for r in tables.get(side, []) if r["item"] == item]
        if not match:
            rows.append(_row(scenario, cid, item, f"count in the {side} subsets", None, None, None, "not run"))
            continue
        r = match[0]
        rows.append(_row(scenario, cid, item,
                         f"count in the {side} subsets: {r['observed']} (chance mean {r['chance_mean']:.2f}, "
                         f"95% chance quantile {r['chance_upper']}, p = {r['p_value']:.3f})",
                         r["observed"], None, r["chance_upper"], count_verdict(r)))
    return rows


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _fmt(x: Any) -> str:
    return "NA" if x is None or not math.isfinite(float(x)) else f"{float(x):+.3f}"


def claims_table(per_scenario: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
                 n_wsi: Mapping[str, int] | None = None) -> pl.DataFrame:
    """One row per (scenario, claim, subject): see module docstring. `per_scenario` maps a scenario name
    to its documents {"scanner_bias", "table1", "ablation", "mil_table"}; `n_wsi` the number of 40x
    multiscanner WSIs per scenario (for the predictability interval)."""
    rows = []
    for scenario, docs in per_scenario.items():
        rows += scenario_claims(scenario, docs, (n_wsi or {}).get(scenario))
    return pl.DataFrame(rows, schema=COLUMNS)


def claims_summary(table: pl.DataFrame) -> dict[str, Any]:
    """Per scenario and claim: verdict counts over subjects (for the article's text)."""
    out: dict[str, Any] = {}
    for row in table.group_by("scenario", "claim_id", "verdict", maintain_order=True).len().iter_rows(named=True):
        out.setdefault(row["scenario"], {}).setdefault(row["claim_id"], {})[row["verdict"]] = row["len"]
    return out


def claims_display(table: pl.DataFrame) -> pl.DataFrame:
    """The claims table as text for the article: scenario, claim, subject, statistic, estimate [interval],
    verdict."""
    from scangen.tables import fmt_ci

    return table.select(
        pl.col("scenario"), pl.col("claim"), pl.col("subject"), pl.col("statistic"),
        pl.struct("estimate", "lo", "hi").map_elements(lambda s: fmt_ci(s["estimate"], s["lo"], s["hi"]),
                                                       return_dtype=pl.String).alias("measured [95% CI]"),
        pl.col("verdict"))
