"""Paper-style formatting of result tables as Markdown (renders in HTML and in Quarto's typst PDF).

Numbers are formatted, never changed: "0.768 [0.70, 0.83]" is a seed mean with its interval, and
"0.121 (-68.9%)" a ScanGen value with its relative change against the baseline.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import polars as pl

from scangen.constants import REAL_MODEL_OF


def fmt(x: Any, digits: int = 3) -> str:
    """A number with `digits` decimals, an en dash for missing/NaN; anything else as text."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.{digits}f}"


def fmt_ci(mean: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """'mean [lo, hi]', or just the mean when the interval is missing."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


def fmt_change(value: float | None, change: float | None, digits: int = 3) -> str:
    """'value (+x.x%)' with the relative change in percent, or the value alone."""
    if change is None or not math.isfinite(change):
        return fmt(value, digits)
    return f"{fmt(value, digits)} ({change:+.1f}%)"


def to_markdown(df: pl.DataFrame, align: Sequence[str] | None = None) -> str:
    """A pipe table of the frame's values as strings (`align` per column: 'l', 'r' or 'c')."""
    rows = [["" if v is None else str(v) for v in row] for row in df.iter_rows()]
    return pipe_table(df.columns, rows, align)


def pipe_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A Markdown pipe table (Quarto renders it in HTML and Typst alike); `align` 'l', 'r' or 'c' per column."""
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    align = list(align) if align is not None else ["l"] * len(header)
    if len(align) != len(header):
        raise ValueError(f"align: expected {len(header)} entries, got {len(align)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table1_display(table: pl.DataFrame) -> pl.DataFrame:
    """Table 1 layout: model, ScanGen yes/no, AUC [CI], scanner CoV (change), magnification CoV (change)."""
    rows = []
    for r in table.iter_rows(named=True):
        sg = bool(r["use_scangen"])
        rows.append({
            "Embedding": f"{r['fm']} ({REAL_MODEL_OF.get(r['fm'], r['fm'])})",
            "Use ScanGen": "Yes" if sg else "No",
            "EGFR AUC ↑": fmt_ci(r["auc_mean"], r["auc_lo"], r["auc_hi"]),
            "Scanner CoV ↓": fmt_change(r["scanner_cov_mean"], r.get("scanner_cov_rel_change") if sg else None),
            "Magnification CoV ↓": fmt_change(r["mag_cov_mean"], r.get("mag_cov_rel_change") if sg else None),
            "Scanner CoV, prob. ↓": fmt(r["scanner_cov_prob_mean"]),
            "Scanner share ↓": fmt(r["scanner_share_mean"]),
            "Flip rate ↓": fmt(r["flip_rate_mean"]),
            "Seeds": str(r["n_seeds"]),
        })
    return pl.DataFrame(rows)


def mil_display(table: pl.DataFrame, labels: dict[str, str]) -> pl.DataFrame:
    """Table 2 layout: one row per training (EGFR, EGFR + ScanGen), AUC and CoV per MIL head."""
    heads = table["head"].unique(maintain_order=True).to_list()
    rows = []
    for sg in (False, True):
        row = {"MIL approach": "EGFR + ScanGen" if sg else "EGFR"}
        for h in heads:
            r = table.filter((pl.col("head") == h) & (pl.col("use_scangen") == sg)).row(0, named=True)
            lab = labels.get(h, h)
            row[f"{lab} AUC ↑"] = fmt_ci(r["auc_mean"], r["auc_lo"], r["auc_hi"])
            row[f"{lab} CoV ↓"] = fmt_change(r["scanner_cov_mean"], r.get("scanner_cov_rel_change") if sg else None)
        rows.append(row)
    return pl.DataFrame(rows)


def ablation_display(by_size: pl.DataFrame) -> pl.DataFrame:
    """Per subset size: number of subsets, CoV gain (mean, sd, range) and mean scanner-share gain, in percent."""
    return pl.DataFrame([
        {"Scanners in ScanGen": str(r["size"]), "Subsets": str(r["n_subsets"]),
         "Mean CoV gain (%)": fmt(r["gain_mean"], 1), "SD (%)": fmt(r["gain_sd"], 1),
         "Range (%)": f"{fmt(r['gain_min'], 1)} to {fmt(r['gain_max'], 1)}",
         **({"Mean share gain (%)": fmt(r["share_gain_mean"], 1)} if "share_gain_mean" in r else {})}
        for r in by_size.iter_rows(named=True)
    ])


def origin(df: pl.DataFrame, simulated: bool) -> pl.DataFrame:
    """Rename the first column to say where the data come from, e.g. 'Embedding (simulated data)'."""
    first = df.columns[0]
    return df.rename({first: f"{first} ({'simulated' if simulated else 'real'} data)"})


def scanner_bias_display(metrics: pl.DataFrame) -> pl.DataFrame:
    """Embedding-level robustness per FM; published values beside ours where the table has them."""
    rows = []
    for r in metrics.iter_rows(named=True):
        row = {
            "Model": f"{r['fm']} ({REAL_MODEL_OF.get(r['fm'], r['fm'])})",
            "Robustness index ↑": fmt(r.get("robustness_index")),
            "WSI retrieval top-1 ↑": fmt(r.get("wsi_top1")),
            "Tile retrieval top-10 ↑": fmt(r.get("tile_top10")),
            "Scanner predictability ↓": f"{fmt(r.get('scanner_predictability'))} ({fmt(r.get('predictability_chance'), 2)})",
            "Silhouette scanner / specimen": f"{fmt(r.get('umap_silhouette_scanner'), 2)} / {fmt(r.get('umap_silhouette_specimen'), 2)}",
        }
        if "published_ri" in metrics.columns:
            row["Published RI"] = fmt(r["published_ri"])
        if "published_top10" in metrics.columns:
            row["Published top-10"] = fmt(r["published_top10"])
        rows.append(row)
    return pl.DataFrame(rows)


def best_worst_display(best_worst: dict) -> pl.DataFrame:
    """One row per scanner: times in a best subset and in a worst subset (sizes counted)."""
    best, worst = best_worst["scanner_counts"]["best"], best_worst["scanner_counts"]["worst"]
    sizes = ", ".join(str(k) for k in best_worst["sizes_counted"])
    return pl.DataFrame([
        {"Scanner": s, f"In best subsets (sizes {sizes})": str(best.get(s, 0)),
         f"In worst subsets (sizes {sizes})": str(worst.get(s, 0))}
        for s in sorted(set(best) | set(worst), key=lambda s: (-best.get(s, 0), worst.get(s, 0), s))
    ])


def sensitivity_display(table: pl.DataFrame) -> pl.DataFrame:
    """One row per (setting, value): validation AUC/CoV, then test AUC, CoV on logits and on probabilities."""
    return pl.DataFrame([
        {"Setting": r["parameter"], "Value": r["value"], "Val AUC ↑": fmt(r["val_auc"]),
         "Val CoV ↓": fmt(r["val_scanner_cov"]), "Test AUC ↑": fmt(r["auc"]),
         "Test CoV (logits) ↓": fmt(r["scanner_cov"]), "Test CoV (probabilities) ↓": fmt(r["scanner_cov_prob"]),
         "Magnification CoV ↓": fmt(r["mag_cov"])}
        for r in table.iter_rows(named=True)
    ])
