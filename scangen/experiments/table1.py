"""Table 1 and Fig. 1: five FMs x {baseline, ScanGen} x seeds (x split seeds), GAP head.

Each (FM, ScanGen on/off, seed, split seed) is one cached training run evaluated on the held-out test
split: EGFR AUC (40x WSIs, specimen-bootstrap CI), scanner CoV of logits over the primary (40x)
scanners, magnification CoV over GT450 40x/20x, flip rate, near-zero counts. Both arms follow one
declared protocol (the session's training settings: same selection rule and schedule); ScanGen runs add
the settings chosen on validation (`scangen`, from `tuning.read_choice`). Per arm, runs are aggregated as
mean and 95% t-interval over runs (`stats.aggregate_seeds`), with the paper's relative change. The
comparison itself is paired: per FM, a specimen-bootstrap interval of the change ScanGen - baseline,
pooled over seeds (`scangen.metrics.paired`), for the paper's CoV, the median CoV, the within-specimen
SD, the scanner share, the flip rate and the AUC, with a verdict (lower / higher / inconclusive).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from scangen.constants import REAL_MODEL_OF
from scangen.experiments.session import ExperimentSession
from scangen.experiments.stats import add_relative_change, aggregate_seeds, paired_changes, seed_grid
from scangen.train import TrainConfig

PAPER_TABLE2_FM = "hoptimus0-sim"
"""The FM of the ablation and Table 2 unless a notebook names another: H-Optimus-0, as in the paper."""


def arm_pairs(session: ExperimentSession, fm: str, seeds: Sequence[int], *, head: str = "gap",
              scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None,
              **changes: Any) -> list[tuple[TrainConfig, TrainConfig]]:
    """(baseline, ScanGen) configs per (split seed, seed): identical but for the ScanGen switch and the
    ScanGen settings `scangen`; `changes` apply to both arms (e.g. a scanner subset goes to ScanGen only)."""
    sg_extra = {**dict(scangen or {}), **changes}
    base_extra = {k: v for k, v in changes.items() if k != "scanner_subset"}
    return [(session.config(fm=fm, head=head, use_scangen=False, **g, **base_extra),
             session.config(fm=fm, head=head, use_scangen=True, **g, **sg_extra))
            for g in seed_grid(seeds, split_seeds)]


def baselines_then_scangen(pairs: Sequence[tuple[TrainConfig, TrainConfig]]) -> list[TrainConfig]:
    """The (baseline, ScanGen) pairs of one FM or head as all baselines, then all ScanGen runs."""
    return [b for b, _ in pairs] + [s for _, s in pairs]


def table1_configs(session: ExperimentSession, fms: Sequence[str], seeds: Sequence[int], head: str = "gap", *,
                   scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None) -> list[TrainConfig]:
    """Configs in FM-major order (so each FM's bags are loaded once): all baselines then all ScanGen runs."""
    if not fms:
        raise ValueError(f"fms: expected a non-empty list, got {list(fms)}")
    out = []
    for fm in fms:
        out += baselines_then_scangen(arm_pairs(session, fm, seeds, head=head, scangen=scangen, split_seeds=split_seeds))
    return out


def with_split_seed(runs: pl.DataFrame, configs: Sequence[TrainConfig]) -> pl.DataFrame:
    """`runs` (one row per config, same order) with each run's `split_seed`."""
    return runs.with_columns(pl.Series("split_seed", [c.split_seed for c in configs], dtype=pl.Int64))


def run_table1(session: ExperimentSession, fms: Sequence[str], seeds: Sequence[int], *,
               scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None,
               n_boot: int = 2000) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(runs: one row per run, table: one row per (fm, use_scangen) with means, t-intervals, relative
    change and near-zero counts, paired: one row per (fm, metric) with the paired change and its CI)."""
    configs = table1_configs(session, fms, seeds, scangen=scangen, split_seeds=split_seeds)
    runs = with_split_seed(session.run_table(configs), configs)
    table = add_relative_change(aggregate_seeds(runs, ["fm", "use_scangen"]), by=["fm"])
    table = table.join(near_zero_counts(runs, ["fm", "use_scangen"]), on=["fm", "use_scangen"], how="left",
                       maintain_order="left")
    paired = pl.concat([
        paired_changes(session, arm_pairs(session, fm, seeds, scangen=scangen, split_seeds=split_seeds),
                       n_boot=n_boot).with_columns(pl.lit(fm).alias("fm"))
        for fm in fms])
    real = pl.col("fm").replace_strict(REAL_MODEL_OF, default=None).alias("real_model")
    return runs, table.with_columns(real), paired.with_columns(real)


def near_zero_counts(runs: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Per group: mean number of near-zero test specimens per run (|mean logit| < NEAR_ZERO_TOL) and
    of test specimens (`n_near_zero_mean`, `n_specimens_mean`)."""
    return runs.group_by(list(by), maintain_order=True).agg(pl.col("n_near_zero").mean().alias("n_near_zero_mean"),
                                                            pl.col("n_specimens").mean().alias("n_specimens_mean"))


def fixed_fm(fm: str | None, available: Sequence[str], default: str = PAPER_TABLE2_FM) -> tuple[str, str]:
    """(fm, how it was fixed): the notebook's parameter, else `default` (the paper's H-Optimus-0). Never
    read from results, so no test metric can choose it. The FM must be in the store (`available`); a
    store without `default` that holds a single FM (an imported cohort) uses that one."""
    chosen, how = (fm, "given as a parameter") if fm else (default, "default: the FM of the paper's Table 2")
    if not fm and default not in available and len(available) == 1:
        chosen, how = available[0], "the store's only FM"
    if chosen not in available:
        raise ValueError(f"fm: {chosen!r} ({how}) is not in the store (models {list(available)}); set the "
                         f"notebook parameter `fm` in params/<set>.yml")
    return chosen, how


def resolve_fm(fm: str | None, results_dir: Path | None, available: Sequence[str],
               fallback: str = PAPER_TABLE2_FM) -> tuple[str, str]:
    """Former name of `fixed_fm` (kept for notebooks of the previous layout); `results_dir` is ignored:
    the FM is never picked from Table 1's test results."""
    return fixed_fm(fm, available, fallback)


REL_CHANGE_METRICS: tuple[str, ...] = ("auc", "scanner_cov", "mag_cov")
"""Metrics whose ScanGen-vs-baseline relative change the headline JSONs report."""


def paired_entries(paired: pl.DataFrame, key: str) -> dict[Any, dict[str, dict[str, Any]]]:
    """{value of `key`: {metric: {baseline, scangen, diff, diff_lo, diff_hi, verdict, n_pairs}}}."""
    out: dict[Any, dict[str, dict[str, Any]]] = {}
    for row in paired.iter_rows(named=True):
        out.setdefault(row[key], {})[row["metric"]] = {
            k: row[k] for k in ("baseline", "scangen", "diff", "diff_lo", "diff_hi", "level", "verdict", "n_pairs")}
    return out


def baseline_scangen_entries(table: pl.DataFrame, key: str,
                             describe: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per value of `key` (fm, head, ...): `describe(row)` plus the "baseline" and "scangen" seed
    aggregates (`*_mean`, `*_lo`, `*_hi`, `n_seeds`, near-zero counts) and the ScanGen row's "rel_change".

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


def verdict_counts(entries: Mapping[Any, Mapping[str, Any]]) -> dict[str, dict[str, list]]:
    """{metric: {verdict: [keys]}} over entries holding a "paired" block."""
    out: dict[str, dict[str, list]] = {}
    for key, entry in entries.items():
        for metric, p in entry.get("paired", {}).items():
            out.setdefault(metric, {"lower": [], "higher": [], "inconclusive": []})[p["verdict"]].append(key)
    return out


def table1_json(table: pl.DataFrame, paired: pl.DataFrame, seeds: Sequence[int],
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers for the paper: per FM, both arms' aggregates, relative changes and the paired
    changes with CIs and verdicts; `verdicts` lists the FMs per metric and verdict."""
    per_fm = baseline_scangen_entries(table, "fm", lambda row: {"real_model": row["real_model"]})
    for fm, p in paired_entries(paired, "fm").items():
        per_fm[fm]["paired"] = p
    return {"seeds": list(seeds), "fms": per_fm, "verdicts": verdict_counts(per_fm), **(extra or {})}
