"""Aggregation of per-run metrics over seeds, and the relative change reported in the paper's tables.

Per seed, a run gives one AUC (with a specimen-bootstrap CI), one scanner CoV and one magnification
CoV. Over `k` seeds we report the mean and a 95% Student-t interval of the mean
(mean +- t_{0.975, k-1} * sd / sqrt(k), sd with ddof = 1). With a single seed there is no seed
variance to estimate: the AUC interval is then that run's specimen-bootstrap CI and the CoV interval
is left empty (NaN), rather than pretending to a precision we do not have. Interval bounds are clipped
to each metric's natural range (AUC and flip rate in [0, 1], CoV >= 0).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import polars as pl
from scipy import stats as sps

METRICS: tuple[str, ...] = ("auc", "scanner_cov", "scanner_cov_prob", "scanner_share", "mag_cov", "flip_rate")
BOUNDS: dict[str, tuple[float, float]] = {"auc": (0.0, 1.0), "flip_rate": (0.0, 1.0),
                                          "scanner_cov": (0.0, math.inf), "scanner_cov_prob": (0.0, math.inf),
                                          "scanner_share": (0.0, math.inf),
                                          "mag_cov": (0.0, math.inf)}
"""Natural range of each metric; interval bounds are clipped to it (few seeds give wide t-intervals)."""


def relative_change(new: float, base: float) -> float:
    """Percent change of `new` against `base`: 100 * (new - base) / |base| (NaN when base is 0)."""
    if base == 0 or not np.isfinite(base) or not np.isfinite(new):
        return float("nan")
    return 100.0 * (new - base) / abs(base)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over seeds with a Student-t interval; NaN bounds for one value.

    Non-finite values raise, so a failed metric is never averaged away silently.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("values: expected at least one seed's value, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"values: expected finite numbers, got {arr.tolist()}")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, float("nan"), float("nan")
    half = float(sps.t.ppf(0.5 + level / 2.0, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size))
    return mean, mean - half, mean + half


def aggregate_seeds(runs: pl.DataFrame, by: Sequence[str], metrics: Sequence[str] = METRICS) -> pl.DataFrame:
    """One row per group `by` with `<m>_mean`, `<m>_lo`, `<m>_hi` for each metric and `n_seeds`.

    `runs` has one row per (group, seed) and a column per metric. When a group has a single seed,
    `auc_lo`/`auc_hi` fall back to that run's bootstrap CI (`auc_ci_low`/`auc_ci_high` columns).
    Metrics that are entirely NaN in a group (e.g. no 20x scans) stay NaN.
    """
    missing = [c for c in (*by, "seed", *metrics) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs: missing columns {missing}")
    rows = []
    for key, group in runs.group_by(list(by), maintain_order=True):
        row: dict[str, object] = dict(zip(by, key))
        row["n_seeds"] = group.height
        for m in metrics:
            vals = group[m].to_numpy().astype(np.float64)
            if np.all(np.isnan(vals)):
                row[f"{m}_mean"], row[f"{m}_lo"], row[f"{m}_hi"] = (float("nan"),) * 3
                continue
            mean, lo, hi = mean_ci(vals)
            if group.height == 1 and m == "auc" and "auc_ci_low" in group.columns:
                lo, hi = float(group["auc_ci_low"][0]), float(group["auc_ci_high"][0])
            lo_b, hi_b = BOUNDS.get(m, (-math.inf, math.inf))
            if math.isfinite(lo):
                lo, hi = max(lo, lo_b), min(hi, hi_b)
            row[f"{m}_mean"], row[f"{m}_lo"], row[f"{m}_hi"] = mean, lo, hi
        rows.append(row)
    return pl.DataFrame(rows)


def add_relative_change(table: pl.DataFrame, by: Sequence[str], flag: str = "use_scangen",
                        metrics: Sequence[str] = ("auc", "scanner_cov", "scanner_cov_prob", "scanner_share", "mag_cov")) -> pl.DataFrame:
    """Add `<m>_rel_change` (%) of every ScanGen row against the baseline row of the same group.

    `table` holds `<m>_mean` columns and a boolean `flag` column; baseline rows get null. A group
    without its baseline raises, naming the group.
    """
    base = table.filter(~pl.col(flag))
    out = []
    for row in table.iter_rows(named=True):
        match = base
        for b in by:
            match = match.filter(pl.col(b) == row[b])
        if match.height != 1:
            raise ValueError(f"no single baseline row for {dict((b, row[b]) for b in by)}: found {match.height}")
        for m in metrics:
            row[f"{m}_rel_change"] = (
                relative_change(row[f"{m}_mean"], match[f"{m}_mean"][0]) if row[flag] else None
            )
        out.append(row)
    return pl.DataFrame(out)


def run_predictions(session, configs: Sequence) -> list[pl.DataFrame]:
    """Predictions of each config (trained, or read from the session's run cache), in order."""
    configs = list(configs)
    if hasattr(session, "records"):
        return [r.predictions for r in session.records(configs)]
    return [session.run(c)[0] for c in configs]


def paired_changes(session, pairs: Sequence[tuple], *, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0, return_samples: bool = False):
    """Paired specimen-bootstrap changes (second config - first) pooled over `pairs` of TrainConfigs
    (`scangen.metrics.paired.paired_bootstrap`, whose table, or (table, samples), it returns); each run's
    predictions are read once even when it is in many pairs."""
    from scangen.metrics.paired import paired_bootstrap, run_eval
    from scangen.train.config import config_hash

    unique = {}
    for pair in pairs:
        for cfg in pair:
            unique.setdefault(config_hash(cfg), cfg)
    evals = dict(zip(unique, (run_eval(p) for p in run_predictions(session, list(unique.values())))))
    return paired_bootstrap([(evals[config_hash(a)], evals[config_hash(b)]) for a, b in pairs],
                            n_boot=n_boot, level=level, seed=seed, return_samples=return_samples)


def seed_grid(seeds: Sequence[int], split_seeds: Sequence[int] | None) -> list[dict[str, int]]:
    """TrainConfig changes for every (training seed, split seed); `split_seeds` None keeps the session's split."""
    if not seeds:
        raise ValueError("seeds: expected at least one training seed")
    if split_seeds is not None and not split_seeds:
        raise ValueError("split_seeds: expected None or at least one split seed")
    if split_seeds is None:
        return [{"seed": int(s)} for s in seeds]
    return [{"seed": int(s), "split_seed": int(p)} for p in split_seeds for s in seeds]


METRIC_LABELS: dict[str, str] = {"scanner_cov": "scanner CoV (paper)", "median_cov": "median CoV",
                                 "within_sd": "within-specimen SD", "scanner_share": "scanner share",
                                 "flip_rate": "flip rate", "auc": "EGFR AUC", "mag_cov": "magnification CoV"}


def paired_display(paired: pl.DataFrame, key: str, labels: dict[str, str] | None = None) -> pl.DataFrame:
    """Paired changes as text for a paper table: one row per (`key`, metric) with both arms' estimates
    (means over pairs), the change ScanGen - baseline with its interval, and the verdict."""
    from scangen.tables import fmt, fmt_ci

    rows = []
    for r in paired.iter_rows(named=True):
        rows.append({key: (labels or {}).get(r[key], str(r[key])), "metric": METRIC_LABELS.get(r["metric"], r["metric"]),
                     "baseline": fmt(r["baseline"]), "ScanGen": fmt(r["scangen"]),
                     f"change [{round(100 * r['level'])}% CI]": fmt_ci(r["diff"], r["diff_lo"], r["diff_hi"]),
                     "verdict": r["verdict"], "pairs": str(r["n_pairs"])})
    return pl.DataFrame(rows)
