"""Table 1 and Fig. 1: five FMs x {baseline, ScanGen} x seeds, GAP head.

Each (FM, ScanGen on/off, seed) is one cached training run evaluated on the held-out test split:
EGFR AUC (40x WSIs, specimen-bootstrap CI), scanner CoV of logits over the six 40x scanners,
magnification CoV over GT450 40x/20x, flip rate. Seeds are aggregated as mean and 95% t-interval
(`stats.aggregate_seeds`); the ScanGen rows get the relative change against their FM's baseline,
100 * (ScanGen - baseline) / baseline, as the paper prints it (e.g. "0.121 (-68.9%)").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from scangen.constants import REAL_MODEL_OF
from scangen.experiments.results import read_json
from scangen.experiments.session import ExperimentSession
from scangen.experiments.stats import add_relative_change, aggregate_seeds
from scangen.train import TrainConfig


def table1_configs(session: ExperimentSession, fms: Sequence[str], seeds: Sequence[int], head: str = "gap") -> list[TrainConfig]:
    """Configs in FM-major order (so each FM's bags are loaded once): baseline then ScanGen, per seed."""
    if not fms or not seeds:
        raise ValueError(f"fms and seeds: expected non-empty lists, got fms={list(fms)}, seeds={list(seeds)}")
    return [session.config(fm=fm, head=head, use_scangen=sg, seed=int(s))
            for fm in fms for sg in (False, True) for s in seeds]


def run_table1(session: ExperimentSession, fms: Sequence[str], seeds: Sequence[int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(runs: one row per run, table: one row per (fm, use_scangen) with seed means, CIs, relative change)."""
    runs = session.run_table(table1_configs(session, fms, seeds))
    table = add_relative_change(aggregate_seeds(runs, ["fm", "use_scangen"]), by=["fm"])
    return runs, table.with_columns(pl.col("fm").replace_strict(REAL_MODEL_OF, default=None).alias("real_model"))


def strongest_fm(table: pl.DataFrame) -> str:
    """The FM with the highest baseline AUC (the paper's choice of H-Optimus-0 for Table 2)."""
    base = table.filter(~pl.col("use_scangen")).sort(["auc_mean", "fm"], descending=[True, False])
    if base.height == 0:
        raise ValueError("Table 1: no baseline rows to pick the strongest FM from")
    return str(base["fm"][0])


def resolve_fm(fm: str | None, results_dir: Path, available: Sequence[str],
               fallback: str = "hoptimus0-sim", read_table1: bool = True) -> tuple[str, str]:
    """(fm, how it was chosen): the given FM, else Table 1's strongest, else `fallback` (or the store's
    first model when `fallback` is not in `available`). A given or recorded FM must be in `available`.
    `read_table1=False` skips Table 1, for notebooks that run before it (their result must not depend
    on whether an earlier run left a `table1.json`)."""
    if fm:
        chosen, how = fm, "given as a parameter"
    else:
        try:
            if not read_table1:
                raise FileNotFoundError("Table 1 is not read here")
            chosen, how = str(read_json(results_dir, "table1")["strongest_fm"]), "highest baseline AUC in Table 1"
        except FileNotFoundError:
            chosen = fallback if fallback in available or not available else next(iter(available))
            how = "default (Table 1 results not found)" if read_table1 else "default (Table 1 is made later)"
    if chosen not in available:
        raise ValueError(f"fm: {chosen!r} ({how}) is not in the store (models {list(available)})")
    return chosen, how


REL_CHANGE_METRICS: tuple[str, ...] = ("auc", "scanner_cov", "mag_cov")
"""Metrics whose ScanGen-vs-baseline relative change the headline JSONs report."""


def baseline_scangen_entries(table: pl.DataFrame, key: str,
                             describe: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per value of `key` (fm, head, ...): `describe(row)` plus the "baseline" and "scangen" seed
    aggregates (`*_mean`, `*_lo`, `*_hi`, `n_seeds`) and the ScanGen row's "rel_change".

    `table` has one row per (`key`, use_scangen), as `aggregate_seeds` + `add_relative_change` give;
    shared by Table 1 (key "fm") and the MIL table (key "head")."""
    entries: dict[str, dict[str, Any]] = {}
    for row in table.iter_rows(named=True):
        entry = entries.setdefault(row[key], describe(row))
        side = "scangen" if row["use_scangen"] else "baseline"
        entry[side] = {k: row[k] for k in row if k.endswith(("_mean", "_lo", "_hi")) or k == "n_seeds"}
        if row["use_scangen"]:
            entry["rel_change"] = {m: row[f"{m}_rel_change"] for m in REL_CHANGE_METRICS}
    return entries


def table1_json(table: pl.DataFrame, seeds: Sequence[int], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers for the paper: per FM, baseline and ScanGen metrics plus relative changes."""
    per_fm = baseline_scangen_entries(table, "fm", lambda row: {"real_model": row["real_model"]})
    improved = [fm for fm, e in per_fm.items()
                if "scangen" in e and e["scangen"]["scanner_cov_mean"] < e["baseline"]["scanner_cov_mean"]]
    share_down = [fm for fm, e in per_fm.items()
                  if "scangen" in e and e["scangen"]["scanner_share_mean"] < e["baseline"]["scanner_share_mean"]]
    return {"seeds": list(seeds), "fms": per_fm, "strongest_fm": strongest_fm(table),
            "n_fms_cov_reduced": len(improved), "fms_cov_reduced": improved,
            "n_fms_share_reduced": len(share_down), "fms_share_reduced": share_down, **(extra or {})}
