"""Table 2: MIL heads (GAP, AB-MIL, DS-MIL, SlotMIL) with and without ScanGen on the strongest FM.

Same protocol as Table 1 (cached runs, test split, seed means with 95% t-intervals) with the head
varied instead of the FM. The GAP rows are the very runs of Table 1 for that FM (same config, so the
run cache serves them). The strongest FM is read from Table 1's results (highest baseline AUC) unless
the notebook names one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from scangen.experiments.session import ExperimentSession
from scangen.experiments.stats import add_relative_change, aggregate_seeds
from scangen.experiments.table1 import baseline_scangen_entries
from scangen.train import TrainConfig

MIL_HEADS: tuple[str, ...] = ("gap", "abmil", "dsmil", "slotmil")
HEAD_LABELS: dict[str, str] = {"gap": "GAP", "abmil": "AB-MIL", "abmil_gated": "AB-MIL (gated)",
                               "dsmil": "DS-MIL", "slotmil": "SlotMIL"}


def mil_configs(session: ExperimentSession, fm: str, heads: Sequence[str], seeds: Sequence[int]) -> list[TrainConfig]:
    """Head-major configs: baseline then ScanGen per seed, for each head."""
    if not heads or not seeds:
        raise ValueError(f"heads and seeds: expected non-empty lists, got heads={list(heads)}, seeds={list(seeds)}")
    return [session.config(fm=fm, head=h, use_scangen=sg, seed=int(s)) for h in heads for sg in (False, True) for s in seeds]


def run_mil_table(session: ExperimentSession, fm: str, heads: Sequence[str] = MIL_HEADS,
                  seeds: Sequence[int] = (0,)) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(runs: one row per run, table: one row per (head, use_scangen) with means, CIs, relative change)."""
    runs = session.run_table(mil_configs(session, fm, heads, seeds))
    table = add_relative_change(aggregate_seeds(runs, ["head", "use_scangen"]), by=["head"])
    return runs, table.with_columns(pl.lit(fm).alias("fm"))


def mil_json(table: pl.DataFrame, fm: str, how: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Headline numbers: per head, baseline and ScanGen AUC/CoV and the CoV change."""
    heads = baseline_scangen_entries(table, "head",
                                     lambda row: {"label": HEAD_LABELS.get(row["head"], row["head"])})
    reductions = [e["rel_change"]["scanner_cov"] for e in heads.values() if "rel_change" in e]
    return {"fm": fm, "fm_chosen_by": how, "seeds": list(seeds), "heads": heads,
            "cov_rel_change_range": [min(reductions), max(reductions)] if reductions and None not in reductions else None}
