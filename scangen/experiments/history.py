"""Training histories of both arms: validation and test metrics against training step (notebook 04).

A reader should see that the comparison does not hinge on where each run stopped. Every run's history
(one row per evaluation, `RunRecord.history`) holds the validation AUC, CoV, median CoV and within-
specimen SD, and with `TrainConfig.trace_test` the same on the test split (recorded for display only;
selection never reads it). `history_long` stacks them into one long table (one row per run,
evaluation, split and metric) and `history_chart` draws the mean over seeds per arm, with the steps the
runs were selected at marked.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import polars as pl

HISTORY_METRICS: dict[str, str] = {"auc": "EGFR AUC", "cov": "scanner CoV (paper)", "median_cov": "median CoV",
                                   "within_sd": "within-specimen SD"}
"""Metric suffix of the history columns (val_<m>, test_<m>) -> axis title."""


def history_long(configs: Sequence, records: Sequence) -> pl.DataFrame:
    """One row per (run, evaluation step, split, metric): fm, arm, seed, split_seed, step, split, metric,
    value, selected (whether the run kept this evaluation's model). Splits without columns in a history
    (test when `trace_test` was off) are left out."""
    if len(configs) != len(records):
        raise ValueError(f"configs and records: expected equal lengths, got {len(configs)} and {len(records)}")
    frames = []
    for cfg, rec in zip(configs, records):
        h = rec.history
        best = int(rec.predictions["best_step"][0]) if "best_step" in rec.predictions.columns else None
        for split in ("val", "test"):
            for m in HISTORY_METRICS:
                col = f"{split}_{m}"
                if col not in h.columns:
                    continue
                frames.append(h.select(
                    pl.lit(cfg.fm).alias("fm"), pl.lit("ScanGen" if cfg.use_scangen else "baseline").alias("arm"),
                    pl.lit(cfg.seed).cast(pl.Int64).alias("seed"), pl.lit(cfg.split_seed).cast(pl.Int64).alias("split_seed"),
                    pl.col("step").cast(pl.Int64), pl.lit(split).alias("split"), pl.lit(m).alias("metric"),
                    pl.col(col).cast(pl.Float64).alias("value"),
                    (pl.col("step") == best).alias("selected")))
    if not frames:
        raise ValueError("records: no history holds val_/test_ metric columns")
    return pl.concat(frames)


def history_chart(long: pl.DataFrame, *, simulated: bool = True) -> alt.FacetChart:
    """Mean over seeds of each metric against step, per FM (columns) and metric (rows); colour = arm,
    dash = split; points mark the evaluations at which runs were selected (mean selected step per arm)."""
    mean = (long.group_by("fm", "arm", "step", "split", "metric")
            .agg(pl.col("value").mean(), pl.col("selected").sum().alias("n_selected"))
            .with_columns(pl.col("metric").replace_strict(HISTORY_METRICS).alias("metric_title"))
            .sort("fm", "arm", "split", "metric", "step"))
    base = alt.Chart().encode(
        x=alt.X("step:Q", title="training step"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("arm:N", title="arm"),
        strokeDash=alt.StrokeDash("split:N", title="split"))
    lines = base.mark_line()
    picked = base.transform_filter(alt.datum.n_selected > 0).mark_point(filled=True).encode(
        size=alt.Size("n_selected:Q", title="runs selected here"))
    title = "Validation and test metrics against training step" + (" (simulated cohort)" if simulated else "")
    return (alt.layer(lines, picked, data=mean.to_pandas())
            .properties(width=150, height=110)
            .facet(row=alt.Row("metric_title:N", title=None), column=alt.Column("fm:N", title=None))
            .resolve_scale(y="independent")
            .properties(title=title))
