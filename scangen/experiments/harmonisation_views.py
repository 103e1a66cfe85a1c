"""Displays of Table 3 (`scangen.experiments.harmonisation`): text tables for the article and a chart
of the paired changes against the uncorrected baseline."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from scangen.experiments.harmonisation import EMBEDDING_METRICS, TABLE3_METRICS
from scangen.harmonise import inference_needs


LABELS: dict[str, str] = {"scanner_cov": "scanner CoV", "mag_cov": "mag. CoV", "median_cov": "median CoV",
                          "within_sd": "within SD", "flip_rate": "flip rate", "auc": "AUC"}
"""Column headers (the captions spell out magnification CoV and within-specimen SD)."""


def method_label(method: str) -> str:
    """A method's name for a table cell, breakable at '+'."""
    return method.replace("+", " + ")


INCONCLUSIVE = " ~"
"""Marks a change whose interval spans zero (inconclusive) in a table cell; captions say so."""
AGREEMENT_METRICS: tuple[str, ...] = ("scanner_cov", "mag_cov", "median_cov", "within_sd")
TASK_METRICS: tuple[str, ...] = ("flip_rate", "auc")
EMBEDDING_HEADERS: dict[str, str] = {"robustness_index": "robustness index", "wsi_top1": "WSI top-1",
                                     "tile_top1": "tile top-1", "tile_top10": "tile top-10",
                                     "scanner_predictability": "scanner probe"}


def short_needs(method: str) -> str:
    """A table cell's version of `needs_at_test_time` (the design table gives the full text)."""
    return "scanner label" if inference_needs(method).scanner_label else "nothing"


def table3_display(paired: pl.DataFrame, metrics: Sequence[str] = TABLE3_METRICS, needs: bool = True) -> pl.DataFrame:
    """Table 3 as text: per (FM, method) the change against the uncorrected baseline [95% CI] of each
    metric (an interval spanning zero is marked "inconclusive"), and what the method needs at test time."""
    from scangen.tables import fmt_ci

    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in paired.filter(pl.col("metric").is_in(list(metrics))).iter_rows(named=True):
        row = rows.setdefault((r["fm"], r["method"]), {"FM": r["fm"], "method": method_label(r["method"])})
        text = fmt_ci(r["diff"], r["diff_lo"], r["diff_hi"])
        row[LABELS.get(r["metric"], r["metric"])] = text + (INCONCLUSIVE if r["verdict"] == "inconclusive" else "")
    for (fm, method), row in rows.items():
        if needs:
            row["needs at test time"] = short_needs(method)
    return pl.DataFrame(list(rows.values()))


def scanner_auc_display(paired: pl.DataFrame) -> pl.DataFrame:
    """Change of the AUC per primary scanner against the baseline [95% CI], one column per scanner."""
    from scangen.tables import fmt_ci

    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in paired.filter(pl.col("metric").str.starts_with("auc_")).iter_rows(named=True):
        row = rows.setdefault((r["fm"], r["method"]), {"FM": r["fm"], "method": method_label(r["method"])})
        row[r["metric"][4:]] = fmt_ci(r["diff"], r["diff_lo"], r["diff_hi"]) + (INCONCLUSIVE if r["verdict"] == "inconclusive" else "")
    return pl.DataFrame(list(rows.values()))


def embedding_display(embedding: pl.DataFrame) -> pl.DataFrame:
    """Embedding-level numbers per (FM, feature map) with the change against the uncorrected FM."""
    from scangen.tables import fmt

    return pl.DataFrame([{"FM": r["fm"], "method": method_label(r["method"]),
                          **{EMBEDDING_HEADERS[k]: f"{fmt(r[k])} ({'+' if (r[k + '_diff'] or 0) >= 0 else ''}{fmt(r[k + '_diff'])})"
                             for k in EMBEDDING_METRICS}} for r in embedding.iter_rows(named=True)])


def paired_chart(paired: pl.DataFrame, metrics: Sequence[str] = ("scanner_cov", "median_cov", "within_sd", "auc"), *,
                 simulated: bool = True):
    """Change against the uncorrected baseline with its 95% interval, per method (rows) and metric
    (panels), one colour per FM; the vertical rule is no change."""
    import altair as alt

    df = (paired.filter(pl.col("metric").is_in(list(metrics)))
          .with_columns(pl.col("metric").replace_strict(LABELS, default=pl.col("metric")).alias("label"))
          .select("fm", "method", "label", "diff", "diff_lo", "diff_hi", "verdict").to_pandas())
    y = alt.Y("method:N", title=None, sort=None)
    bars = alt.Chart().mark_rule().encode(x=alt.X("diff_lo:Q", title="change vs no correction"), x2="diff_hi:Q", y=y,
                                          color=alt.Color("fm:N", title="FM"), yOffset="fm:N")
    points = alt.Chart().mark_point(filled=True).encode(x="diff:Q", y=y, color="fm:N", yOffset="fm:N",
                                                        tooltip=["fm", "method", "label", "diff", "diff_lo", "diff_hi", "verdict"])
    zero = alt.Chart().mark_rule(strokeDash=[4, 3], color="grey").encode(x="z:Q").transform_calculate(z="0")
    title = "Harmonisation methods against no correction" + (" (simulated cohort)" if simulated else "")
    return (alt.layer(bars, points, zero, data=df).properties(width=170, height=160)
            .facet(column=alt.Column("label:N", title=None, sort=list(LABELS.values())))
            .resolve_scale(x="independent").properties(title=title))
