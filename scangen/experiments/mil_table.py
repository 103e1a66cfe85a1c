"""Table 2: MIL heads (GAP, AB-MIL, DS-MIL, SlotMIL) with and without ScanGen on one fixed FM.

Same protocol as Table 1 (cached runs, test split, seed means with 95% t-intervals, paired specimen-
bootstrap changes pooled over seeds) with the head varied instead of the FM. The FM is a parameter,
H-Optimus-0's stand-in by default as in the paper (`table1.fixed_fm`); it is never picked from test
results. The GAP rows are the very runs of Table 1 for that FM (same config, so the run cache serves them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from scangen.experiments.session import ExperimentSession
from scangen.experiments.stats import add_relative_change, aggregate_seeds, paired_changes
from scangen.experiments.table1 import arm_pairs, baselines_then_scangen, baseline_scangen_entries, near_zero_counts, paired_entries, \
    verdict_counts, with_split_seed
from scangen.train import TrainConfig

MIL_HEADS: tuple[str, ...] = ("gap", "abmil", "dsmil", "slotmil")
HEAD_LABELS: dict[str, str] = {"gap": "GAP", "abmil": "AB-MIL", "abmil_gated": "AB-MIL (gated)",
                               "dsmil": "DS-MIL", "slotmil": "SlotMIL"}


def mil_configs(session: ExperimentSession, fm: str, heads: Sequence[str], seeds: Sequence[int], *,
                scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None) -> list[TrainConfig]:
    """Head-major configs: all baselines then all ScanGen runs, for each head."""
    if not heads:
        raise ValueError(f"heads: expected a non-empty list, got {list(heads)}")
    out = []
    for h in heads:
        out += baselines_then_scangen(arm_pairs(session, fm, seeds, head=h, scangen=scangen, split_seeds=split_seeds))
    return out


def run_mil_table(session: ExperimentSession, fm: str, heads: Sequence[str] = MIL_HEADS,
                  seeds: Sequence[int] = (0,), *, scangen: Mapping[str, Any] | None = None,
                  split_seeds: Sequence[int] | None = None,
                  n_boot: int = 2000) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(runs, table: one row per (head, use_scangen), paired: one row per (head, metric))."""
    configs = mil_configs(session, fm, heads, seeds, scangen=scangen, split_seeds=split_seeds)
    runs = with_split_seed(session.run_table(configs), configs)
    table = add_relative_change(aggregate_seeds(runs, ["head", "use_scangen"]), by=["head"])
    table = table.join(near_zero_counts(runs, ["head", "use_scangen"]), on=["head", "use_scangen"], how="left",
                       maintain_order="left")
    paired = pl.concat([
        paired_changes(session, arm_pairs(session, fm, seeds, head=h, scangen=scangen, split_seeds=split_seeds),
                       n_boot=n_boot).with_columns(pl.lit(h).alias("head"))
        for h in heads])
    return runs, table.with_columns(pl.lit(fm).alias("fm")), paired.with_columns(pl.lit(fm).alias("fm"))


def mil_json(table: pl.DataFrame, paired: pl.DataFrame, fm: str, how: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Headline numbers: per head, both arms' AUC/CoV aggregates, the relative CoV change and the paired
    changes with CIs and verdicts."""
    heads = baseline_scangen_entries(table, "head",
                                     lambda row: {"label": HEAD_LABELS.get(row["head"], row["head"])})
    for head, p in paired_entries(paired, "head").items():
        heads[head]["paired"] = p
    reductions = [e["rel_change"]["scanner_cov"] for e in heads.values() if "rel_change" in e]
    return {"fm": fm, "fm_chosen_by": how, "seeds": list(seeds), "heads": heads, "verdicts": verdict_counts(heads),
            "cov_rel_change_range": [min(reductions), max(reductions)] if reductions and None not in reductions else None}
