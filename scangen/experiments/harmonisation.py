"""Table 3: ScanGen against the standard scanner-harmonisation methods, Table 1's protocol and statistics.

Methods (`METHODS`, TrainConfig changes on top of the session's declared protocol, GAP head):
- none: the uncorrected baseline (the same cached run as Table 1's baseline);
- standardize / combat / coral: feature maps (`scangen.harmonise`) fitted by the trainer on the run's
  training slides (task_train + scangen_train) and applied to every slide (`TrainConfig.harmonize`);
- dann: the gradient-reversal scanner adversary on phi's output, trained with the task on the same
  two-flow data as ScanGen, weight `DANN_WEIGHT` (a fixed value declared here, never tuned on any split);
- scangen: ScanGen with the settings chosen on validation (`tuning.read_choice`), Table 1's ScanGen arm;
- scangen+standardize: the same plus per-scanner standardisation (a check of whether they add up).
Every method runs for every FM and (seed, split seed) of the parameter set. The comparison is paired
against "none" of the same seed and split (`scangen.metrics.paired`: specimen bootstrap pooled over
seeds): the paper's scanner CoV, the magnification CoV, the median CoV, the within-specimen SD, the flip
rate and the AUC pooled and per primary scanner (the same resample draws restricted to that scanner's
scans). `needs` says what a method needs at test time (`scangen.harmonise.needs_at_test_time`).

Embedding level (`embedding_table`): notebook 02's numbers (robustness index, WSI and registered-tile
cross-scanner retrieval, scanner predictability; `scangen.metrics.robustness`) on the FM embeddings
harmonised by each feature map, fitted on the training slides of the split (never val or test) and
measured on the held-out test slides only. DANN and ScanGen change the model, not its input features,
so they have no row there (their learned-space distances are the runs' `diag_*` columns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from scangen.constants import REAL_MODEL_OF
from scangen.experiments.stats import aggregate_seeds, seed_grid
from scangen.harmonise import fit_harmoniser, needs_at_test_time
from scangen.metrics import robustness as rb
from scangen.metrics.paired import RunEval, paired_bootstrap, run_eval
from scangen.metrics.summary import evaluation_rows
from scangen.splits import specimen_splits
from scangen.store import Bags, load_registered
from scangen.train import TrainConfig
from scangen.train.config import config_hash
from scangen.train.extensions import FIT_SPLITS, fit_positions

BASELINE = "none"
DANN_WEIGHT = 1.0
"""DANN's adversary weight: declared before any run (the spec's default ScanGen weight lambda = 1, so
both auxiliary losses enter at the same scale), not chosen on any split."""
FEATURE_MAPS: tuple[str, ...] = ("standardize", "combat", "coral")
METHODS: tuple[str, ...] = (BASELINE, *FEATURE_MAPS, "dann", "scangen", "scangen+standardize")
TABLE3_METRICS: tuple[str, ...] = ("scanner_cov", "mag_cov", "median_cov", "within_sd", "flip_rate", "auc")
"""Paired metrics of Table 3, in column order (a subset of `scangen.metrics.paired.PAIRED_METRICS`)."""
EMBEDDING_METRICS: tuple[str, ...] = ("robustness_index", "wsi_top1", "tile_top1", "tile_top10",
                                      "scanner_predictability")


def method_changes(method: str, scangen: Mapping[str, Any] | None = None,
                   dann_weight: float = DANN_WEIGHT) -> dict[str, Any]:
    """TrainConfig changes of `method` on top of the shared protocol (see module docstring)."""
    sg = {"use_scangen": True, **dict(scangen or {})}
    table = {BASELINE: {"use_scangen": False}, "dann": {"use_scangen": False, "adversary_weight": float(dann_weight)},
             "scangen": sg, "scangen+standardize": {**sg, "harmonize": "standardize"},
             **{m: {"use_scangen": False, "harmonize": m} for m in FEATURE_MAPS}}
    if method not in table:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return table[method]


def check_methods(methods: Sequence[str]) -> list[str]:
    """`methods` validated: known, distinct, the baseline first (the paired reference)."""
    out = list(methods)
    if not out or out[0] != BASELINE or len(set(out)) != len(out) or any(m not in METHODS for m in out):
        raise ValueError(f"methods: expected distinct names from {METHODS} starting with {BASELINE!r}, got {out}")
    return out


def method_configs(session, fm: str, seeds: Sequence[int], methods: Sequence[str] = METHODS, *,
                   scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None,
                   dann_weight: float = DANN_WEIGHT) -> list[tuple[str, TrainConfig]]:
    """(method, config) for every method and (split seed, seed), GAP head, method-major order. The
    baseline and ScanGen configs equal Table 1's (`table1.arm_pairs`), so their runs are shared."""
    return [(m, session.config(fm=fm, head="gap", **method_changes(m, scangen, dann_weight), **g))
            for m in check_methods(methods) for g in seed_grid(seeds, split_seeds)]


def scanner_eval(ev: RunEval, pred: pl.DataFrame, scanner: str) -> RunEval:
    """`ev` restricted, for the AUC, to the test scans of `scanner` (specimen summaries kept, so the
    bootstrap draws the same specimens as for the pooled metrics)."""
    keep = (evaluation_rows(pred, "test")["scanner"] == scanner).to_numpy()
    return dataclasses.replace(ev, y=ev.y[keep], score=ev.score[keep], scan_spec=ev.scan_spec[keep])


def paired_table(method_preds: Mapping[str, Sequence[pl.DataFrame]], scanners: Sequence[str], *,
                 n_boot: int = 2000, seed: int = 0) -> pl.DataFrame:
    """One row per (method, metric) against the baseline: `baseline`, `corrected` (means over pairs),
    `diff` with its specimen-bootstrap interval `diff_lo`/`diff_hi`, `verdict`, `n_pairs`.

    `method_preds[m][i]` is the i-th (seed, split) run of method m; run i of every method shares a seed
    and split with run i of the baseline. Metrics: TABLE3_METRICS, then `auc_<scanner>` per scanner."""
    base = [run_eval(p) for p in method_preds[BASELINE]]
    rows = []
    for method, preds in method_preds.items():
        if method == BASELINE:
            continue
        if len(preds) != len(base):
            raise ValueError(f"method {method!r}: {len(preds)} runs, the baseline has {len(base)}")
        evs = [run_eval(p) for p in preds]
        parts = [paired_bootstrap(list(zip(base, evs)), TABLE3_METRICS, n_boot=n_boot, seed=seed)]
        for sc in scanners:
            pairs = [(scanner_eval(a, pa, sc), scanner_eval(b, pb, sc))
                     for a, b, pa, pb in zip(base, evs, method_preds[BASELINE], preds)]
            parts.append(paired_bootstrap(pairs, ("auc",), n_boot=n_boot, seed=seed)
                         .with_columns(pl.lit(f"auc_{sc}").alias("metric")))
        rows.append(pl.concat(parts).rename({"scangen": "corrected"})
                    .with_columns(pl.lit(method).alias("method"), pl.lit(needs_at_test_time(method)).alias("needs")))
    return pl.concat(rows).select("method", "metric", pl.exclude("method", "metric"))


def run_table3(session, fms: Sequence[str], seeds: Sequence[int], methods: Sequence[str] = METHODS, *,
               scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None,
               dann_weight: float = DANN_WEIGHT, n_boot: int = 2000) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(runs: one summary row per run with `method` and `split_seed`; summary: per (fm, method) means and
    intervals over runs; paired: per (fm, method, metric) the paired change against the baseline)."""
    if not fms:
        raise ValueError(f"fms: expected a non-empty list, got {list(fms)}")
    methods = check_methods(methods)
    all_runs, paired = [], []
    for fm in fms:
        labelled = method_configs(session, fm, seeds, methods, scangen=scangen, split_seeds=split_seeds,
                                  dann_weight=dann_weight)
        configs = [c for _, c in labelled]
        runs = session.run_table(configs).with_columns(
            pl.Series("method", [m for m, _ in labelled]), pl.Series("split_seed", [c.split_seed for c in configs]))
        all_runs.append(runs)
        preds = dict(zip((config_hash(c) for c in configs), (r.predictions for r in session.records(configs))))
        by_method: dict[str, list[pl.DataFrame]] = {}
        for m, c in labelled:
            by_method.setdefault(m, []).append(preds[config_hash(c)])
        paired.append(paired_table(by_method, session.primary_scanners, n_boot=n_boot)
                      .with_columns(pl.lit(fm).alias("fm")))
    runs = pl.concat(all_runs, how="diagonal_relaxed")
    summary = aggregate_seeds(runs, ["fm", "method"]).with_columns(
        pl.col("method").map_elements(needs_at_test_time, return_dtype=pl.String).alias("needs"))
    real = pl.col("fm").replace_strict(REAL_MODEL_OF, default=None).alias("real_model")
    return runs, summary.with_columns(real), pl.concat(paired).with_columns(real)


# --- embedding level ---------------------------------------------------------------------------------

def split_positions(bags: Bags, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions: training slides of the run's split, FIT_SPLITS; test positions: test slides)."""
    slides = specimen_splits(bags.slides, config.split_seed, config.split_fractions)
    test = np.flatnonzero((slides["split"] == "test").to_numpy())
    return fit_positions(slides), test


def embedding_row(bags: Bags, registered, *, max_patches_per_slide: int | None, max_tile_queries: int | None,
                  seed: int = 0) -> dict[str, Any]:
    """Notebook 02's embedding-level numbers of (test-slide) `bags` and `registered` tiles (None: NaN)."""
    multi = rb.select_scans(bags, "multiscanner")
    row: dict[str, Any] = {}
    row["robustness_index"] = (rb.robustness_index_bags(multi, level="patch", max_patches_per_slide=max_patches_per_slide,
                                                        seed=seed).value if multi.tissue_class is not None else np.nan)
    row["wsi_top1"] = rb.wsi_retrieval_bags(multi, ks=(1,)).top_k[1]
    if registered is not None:
        tiles = rb.cross_scanner_retrieval_bags(registered, ks=(1, 10), max_queries=max_tile_queries, seed=seed)
        row.update(tile_top1=tiles.mean_top_k[1], tile_top10=tiles.mean_top_k[10])
    else:
        row.update(tile_top1=np.nan, tile_top10=np.nan)
    pred = rb.scanner_predictability_bags(multi, seed=seed)
    row.update(scanner_predictability=pred.balanced_accuracy, predictability_chance=pred.chance)
    return row


def embedding_table(store: Path, fm: str, bags: Bags, config: TrainConfig, methods: Sequence[str] = METHODS, *,
                    max_patches_per_slide: int | None = 16, max_tile_queries: int | None = 256,
                    seed: int = 0) -> pl.DataFrame:
    """One row per feature-map method of `methods` (and the baseline): embedding-level numbers on the
    test slides after the map fitted on the training slides of `config`'s split; `<metric>_diff` is the
    change against the baseline."""
    fit, test = split_positions(bags, config)
    test_ids = set(bags.slides["slide_id"][test].to_list())
    reg_path = Path(store) / "registered" / f"{fm}.parquet"
    registered = load_registered(store, fm) if reg_path.is_file() else None
    if registered is not None:
        registered = registered.select(np.flatnonzero(registered.slides["slide_id"].is_in(list(test_ids)).to_numpy()))
    rows = []
    for m in [BASELINE] + [m for m in methods if m in FEATURE_MAPS]:
        maps = None if m == BASELINE else fit_harmoniser(bags, fit, m)
        h_bags = bags.select(test) if maps is None else maps.apply(bags.select(test))
        h_reg = registered if (maps is None or registered is None) else maps.apply(registered)
        rows.append({"fm": fm, "method": m, **embedding_row(h_bags, h_reg, max_patches_per_slide=max_patches_per_slide,
                                                              max_tile_queries=max_tile_queries, seed=seed),
                     "n_fit_slides": int(fit.size), "n_test_slides": int(test.size)})
    table = pl.DataFrame(rows)
    return table.with_columns([(pl.col(k) - pl.col(k).first()).alias(f"{k}_diff") for k in EMBEDDING_METRICS])


# --- result files and displays -------------------------------------------------------------------------

def table3_json(paired: pl.DataFrame, summary: pl.DataFrame, embedding: pl.DataFrame | None, *,
                seeds: Sequence[int], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{fms: {fm: {method: {needs, paired: {metric: {...}}, embedding: {...}}}}, verdicts: {metric: {verdict:
    ["fm/method", ...]}}, seeds, ...}: the numbers the article reads."""
    fms: dict[str, dict[str, Any]] = {}
    for r in summary.iter_rows(named=True):
        fms.setdefault(r["fm"], {})[r["method"]] = {"needs": r["needs"], "auc_mean": r["auc_mean"],
                                                    "scanner_cov_mean": r["scanner_cov_mean"], "paired": {}}
    verdicts: dict[str, dict[str, list[str]]] = {}
    for r in paired.iter_rows(named=True):
        fms[r["fm"]][r["method"]]["paired"][r["metric"]] = {
            k: r[k] for k in ("baseline", "corrected", "diff", "diff_lo", "diff_hi", "level", "verdict", "n_pairs")}
        verdicts.setdefault(r["metric"], {"lower": [], "higher": [], "inconclusive": []})[r["verdict"]].append(
            f"{r['fm']}/{r['method']}")
    for r in (embedding.iter_rows(named=True) if embedding is not None else ()):
        fms[r["fm"]][r["method"]]["embedding"] = {k: r[k] for k in r if k not in ("fm", "method", "simulated")}
    return {"seeds": list(seeds), "methods": list(dict.fromkeys(summary["method"].to_list())), "fms": fms,
            "verdicts": verdicts, **dict(extra or {})}


def fit_splits() -> tuple[str, ...]:
    """Splits every harmonisation in this experiment is fitted on (the training slides of both flows)."""
    return FIT_SPLITS
