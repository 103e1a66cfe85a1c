"""Scanner-subset ablation (paper Fig. 4): ScanGen trained on every subset of 2..6 of the six 40x
scanners, each tested on all six scanners of the held-out test split.

For a subset S, the CoV gain over the baseline (no ScanGen) of the same FM and seed is
`gain(S) = 100 * (CoV_base - CoV_S) / CoV_base` (percent; positive = less scanner bias). Per subset
size we report mean, sd, min and max gain over subsets (seed-averaged first), and the mean gain in
the scale-free scanner share (`share_gain`, same formula on `scangen.metrics.scanner_variance`'s
share), which a few specimens with a mean logit near 0 cannot dominate. For each size in
`count_sizes` (2..5 as in the paper) the `top_k` subsets with the lowest CoV are "best" and the
`top_k` with the highest CoV "worst"; we count how often each scanner, and each scanner pair, appears
in them. Ties in CoV break by the subset's name, so the counts are deterministic. Each count is set
against its chance distribution (`scangen.metrics.paired.count_reference`: subset rankings drawn at
random within each size), so the text can say whether any scanner or pair lands in the best or worst
subsets more often than chance. Per subset size, the CoV change is also given as a paired specimen-
bootstrap interval pooled over the size's subsets and the seeds (`scangen.metrics.paired`).

The FM is a parameter (H-Optimus-0's stand-in by default, as the paper's Table 2; never chosen on test
results), the scanners are the store's primary scanners (`scan_labels.primary_scanners`), and the
ScanGen runs take the settings chosen on validation (`scangen`, from `tuning.read_choice`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import polars as pl

from scangen.constants import SCANNERS_40X
from scangen.metrics.paired import count_reference, verdict


def enumerate_subsets(scanners: Sequence[str] = SCANNERS_40X, sizes: Sequence[int] = range(2, 7)) -> list[tuple[str, ...]]:
    """Every subset of `scanners` with a size in `sizes`, ordered by size then lexicographic position."""
    scanners = tuple(scanners)
    if len(set(scanners)) != len(scanners):
        raise ValueError(f"scanners: expected distinct codes, got {scanners}")
    bad = [k for k in sizes if not 1 <= k <= len(scanners)]
    if bad:
        raise ValueError(f"sizes: expected sizes in 1..{len(scanners)}, got {bad}")
    return [s for k in sizes for s in combinations(scanners, k)]


def select_subsets(subsets: Sequence[tuple[str, ...]], max_subsets: int | None) -> list[tuple[str, ...]]:
    """A deterministic, size-balanced selection of at most `max_subsets` subsets (None = all).

    The largest subset (all scanners) is always kept; the rest are taken round-robin over sizes,
    evenly spaced within each size, so a small budget still covers every size.
    """
    subsets = list(subsets)
    if max_subsets is None or max_subsets >= len(subsets):
        return subsets
    if max_subsets < 1:
        raise ValueError(f"max_subsets: expected a positive integer or None, got {max_subsets}")
    full = max(subsets, key=len)
    by_size: dict[int, list[tuple[str, ...]]] = {}
    for s in subsets:
        if s != full:
            by_size.setdefault(len(s), []).append(s)
    chosen = [full]
    sizes = sorted(by_size)
    quota = {k: 0 for k in sizes}
    remaining = max_subsets - 1
    while remaining > 0 and any(quota[k] < len(by_size[k]) for k in sizes):
        for k in sizes:
            if remaining > 0 and quota[k] < len(by_size[k]):
                quota[k] += 1
                remaining -= 1
    for k in sizes:
        members, n = by_size[k], quota[k]
        idx = np.unique(np.linspace(0, len(members) - 1, n).round().astype(int)) if n else []
        chosen.extend(members[i] for i in idx)
    order = {s: i for i, s in enumerate(subsets)}
    return sorted(chosen, key=order.__getitem__)


def subset_name(subset: Sequence[str]) -> str:
    """Readable id of a subset, e.g. 'AT2+GT450'."""
    return "+".join(subset)


def cov_gain(cov: float | np.ndarray, base_cov: float | np.ndarray) -> float | np.ndarray:
    """Percent CoV reduction against the baseline: 100 * (base - cov) / base."""
    base = np.asarray(base_cov, dtype=np.float64)
    if np.any(base <= 0):
        raise ValueError(f"base_cov: expected positive baseline CoV, got {base_cov}")
    out = 100.0 * (base - np.asarray(cov, dtype=np.float64)) / base
    return float(out) if out.ndim == 0 else out


def gain_by_size(subset_table: pl.DataFrame) -> pl.DataFrame:
    """Per subset size: n_subsets and mean/sd/min/max of the seed-averaged `gain` column (plus the
    mean of `share_gain` as `share_gain_mean` when the table has it)."""
    need = {"size", "gain"}
    if not need <= set(subset_table.columns):
        raise ValueError(f"subset table: missing columns {sorted(need - set(subset_table.columns))}")
    return (
        subset_table.group_by("size")
        .agg(
            pl.len().alias("n_subsets"),
            pl.col("gain").mean().alias("gain_mean"),
            pl.col("gain").std(ddof=1).alias("gain_sd"),
            pl.col("gain").min().alias("gain_min"),
            pl.col("gain").max().alias("gain_max"),
            *([pl.col("share_gain").mean().alias("share_gain_mean")] if "share_gain" in subset_table.columns else []),
        )
        .sort("size")
    )


def best_worst(subset_table: pl.DataFrame, count_sizes: Sequence[int] = (2, 3, 4, 5), top_k: int = 1,
               scanners: Sequence[str] = SCANNERS_40X) -> dict:
    """Best (lowest CoV) and worst (highest CoV) subsets per size, with scanner and pair counts.

    `subset_table` has one row per subset with columns `subset` (list of codes), `size` and
    `scanner_cov` (seed-averaged). Sizes in `count_sizes` without any subset are skipped and listed.
    Returns {"best": {size: [names]}, "worst": {...}, "scanner_counts": {"best": {code: n},
    "worst": {...}}, "pair_counts": {"best": {"A+B": n}, "worst": {...}}, "sizes_counted": [...]}.
    """
    if top_k < 1:
        raise ValueError(f"top_k: expected a positive integer, got {top_k}")
    picks: dict[str, dict[int, list[tuple[str, ...]]]] = {"best": {}, "worst": {}}
    counted = []
    for k in count_sizes:
        rows = subset_table.filter(pl.col("size") == k)
        if rows.height == 0:
            continue
        counted.append(int(k))
        items = sorted(
            ((float(c), tuple(s)) for c, s in zip(rows["scanner_cov"].to_list(), rows["subset"].to_list())),
            key=lambda t: (t[0], subset_name(t[1])),
        )
        n = min(top_k, len(items))
        picks["best"][int(k)] = [s for _, s in items[:n]]
        picks["worst"][int(k)] = [s for _, s in sorted(items, key=lambda t: (-t[0], subset_name(t[1])))[:n]]
    scanner_counts, pair_counts = {}, {}
    for side, per_size in picks.items():
        sc: Counter[str] = Counter({s: 0 for s in scanners})
        pc: Counter[str] = Counter()
        for subsets in per_size.values():
            for s in subsets:
                sc.update(s)
                pc.update(subset_name(p) for p in combinations(s, 2))
        scanner_counts[side] = dict(sorted(sc.items(), key=lambda t: (-t[1], t[0])))
        pair_counts[side] = dict(sorted(pc.items(), key=lambda t: (-t[1], t[0])))
    return {
        "best": {k: [subset_name(s) for s in v] for k, v in picks["best"].items()},
        "worst": {k: [subset_name(s) for s in v] for k, v in picks["worst"].items()},
        "scanner_counts": scanner_counts,
        "pair_counts": pair_counts,
        "sizes_counted": counted,
    }


def run_ablation(session, fm: str, seeds: Sequence[int] = (0,), *, max_subsets: int | None = None,
                 scanners: Sequence[str] | None = None, count_sizes: Sequence[int] = (2, 3, 4, 5),
                 top_k: int = 1, scangen: Mapping[str, Any] | None = None, split_seeds: Sequence[int] | None = None,
                 n_perm: int = 20000, n_boot: int = 2000) -> dict:
    """Train ScanGen on each selected subset (and the baseline) per seed; return all ablation tables.

    Returns {"runs": one row per run, "subsets": one row per subset (seed-averaged CoV, AUC, gain),
    "by_size": `gain_by_size`, "best_worst": `best_worst`, "chance": {"best": table, "worst": table}
    (`CountReference.table`), "paired_by_size": one row per (size, metric), "baseline": {...},
    "scanners": the scanners ranged over}. The gain of each run is taken against the baseline of the
    same seed and split, then averaged. `scanners` None = the store's primary scanners.
    """
    from scangen.experiments.stats import paired_changes
    from scangen.experiments.table1 import arm_pairs, with_split_seed
    from scangen.scan_labels import primary_scanners
    from scangen.store import read_slides

    scanners = tuple(scanners) if scanners is not None else primary_scanners(read_slides(session.store))
    subsets = select_subsets(enumerate_subsets(scanners), max_subsets)
    pairs_of = {sub: arm_pairs(session, fm, seeds, scangen=scangen, split_seeds=split_seeds, scanner_subset=tuple(sub))
                for sub in subsets}
    base_cfgs = [b for b, _ in pairs_of[subsets[0]]]
    sg_cfgs = [s for sub in subsets for _, s in pairs_of[sub]]
    runs = with_split_seed(session.run_table(base_cfgs + sg_cfgs), base_cfgs + sg_cfgs)
    keys = ["seed", "split_seed"]
    base = runs.filter(~pl.col("use_scangen")).select(*keys, base_cov="scanner_cov", base_auc="auc",
                                                       base_share="scanner_share")
    sg = runs.filter(pl.col("use_scangen")).join(base, on=keys, how="left", maintain_order="left")
    sg = sg.with_columns(
        pl.Series("gain", cov_gain(sg["scanner_cov"].to_numpy(), sg["base_cov"].to_numpy()), dtype=pl.Float64),
        pl.Series("share_gain", cov_gain(sg["scanner_share"].to_numpy(), sg["base_share"].to_numpy()), dtype=pl.Float64),
        pl.col("scanner_subset").list.join("+").alias("name"),
    )
    table = (
        sg.group_by("name", maintain_order=True)
        .agg(pl.col("scanner_subset").first().alias("subset"), pl.col("n_scanners").first().alias("size"),
             pl.col("scanner_cov").mean(), pl.col("auc").mean(), pl.col("gain").mean(),
             pl.col("scanner_share").mean(), pl.col("share_gain").mean(), pl.len().alias("n_seeds"))
    )
    for code in scanners:
        table = table.with_columns(pl.col("subset").list.contains(code).alias(f"has_{code}"))
    bw = best_worst(table, count_sizes, top_k, scanners)
    ref = count_reference(subsets, bw["sizes_counted"], top_k, n_perm=n_perm)
    chance = {side: ref.table(bw["scanner_counts"][side] | bw["pair_counts"][side]) for side in ("best", "worst")}
    tables, samples = [], {}
    for k in sorted({len(sub) for sub in subsets}):
        t, samples[k] = paired_changes(session, [p for sub in subsets if len(sub) == k for p in pairs_of[sub]],
                                       n_boot=n_boot, return_samples=True)
        tables.append(t.with_columns(pl.lit(k).alias("size")))
    paired = pl.concat(tables)
    return {
        "runs": runs,
        "subsets": table,
        "by_size": gain_by_size(table),
        "best_worst": bw,
        "chance": chance,
        "paired_by_size": paired,
        "size_contrasts": size_contrasts(paired, samples),
        "baseline": {"scanner_cov": float(base["base_cov"].mean()), "auc": float(base["base_auc"].mean()),
                     "scanner_share": float(base["base_share"].mean())},
        "scanners": list(scanners),
        "n_subsets": len(subsets),
        "n_subsets_possible": len(enumerate_subsets(scanners)),
    }


def size_contrasts(paired: pl.DataFrame, samples: Mapping[int, Mapping[str, np.ndarray]],
                   metrics: Sequence[str] = ("scanner_cov", "median_cov", "within_sd"), level: float = 0.95) -> pl.DataFrame:
    """How the paired change varies with the number of ScanGen scanners, with bootstrap intervals.

    Per metric: "slope" (least-squares slope of the change against the subset size) and "k-(k-1)" (the
    change at size k minus that at the next smaller size). Every size's resamples come from the same
    specimen draws (`paired_bootstrap` with one seed on one split), so each contrast is computed per
    resample. A negative slope means more scanners lower the metric more (a growing gain)."""
    sizes = sorted(samples)
    rows = []
    tail = (1.0 - level) / 2.0
    for m in metrics:
        point = {k: float(paired.filter((pl.col("size") == k) & (pl.col("metric") == m))["diff"][0]) for k in sizes}
        contrasts: list[tuple[str, float, np.ndarray]] = []
        if len(sizes) >= 2:
            x = np.asarray(sizes, dtype=np.float64) - np.mean(sizes)
            boot = np.stack([samples[k][m] for k in sizes], axis=1)  # (n_boot, n_sizes)
            contrasts.append(("slope", float(x @ np.array([point[k] for k in sizes]) / (x @ x)), boot @ x / (x @ x)))
            for a, b in zip(sizes[:-1], sizes[1:]):
                contrasts.append((f"{b}-{a}", point[b] - point[a], samples[b][m] - samples[a][m]))
        for name, est, dist in contrasts:
            ok = dist[np.isfinite(dist)]
            lo, hi = np.quantile(ok, [tail, 1 - tail]) if ok.size else (np.nan, np.nan)
            rows.append({"metric": m, "contrast": name, "estimate": est, "lo": float(lo), "hi": float(hi),
                         "verdict": verdict(float(lo), float(hi))})
    return pl.DataFrame(rows, schema={"metric": pl.String, "contrast": pl.String, "estimate": pl.Float64,
                                      "lo": pl.Float64, "hi": pl.Float64, "verdict": pl.String})


def chance_summary(chance: Mapping[str, pl.DataFrame]) -> dict:
    """Per side: items whose count exceeds the chance upper quantile (95% by default), and whether the
    largest scanner count exceeds the chance quantile of the largest count (all scanners looked at
    together, the reference for "any scanner beyond chance")."""
    out = {}
    for side, t in chance.items():
        scanners = t.filter(pl.col("kind") == "scanner")
        out[side] = {"exceeding": t.filter(pl.col("exceeds"))["item"].to_list(),
                     "max_scanner_count": int(scanners["observed"].max()),
                     "max_chance_upper": float(scanners["max_upper"][0]),
                     "any_scanner_beyond_chance": bool(scanners["observed"].max() > scanners["max_upper"][0])}
    return out


def ablation_json(result: dict, fm: str, seeds: Sequence[int], how: str = "given as a parameter") -> dict:
    """Headline numbers of the ablation for the paper (JSON-ready)."""
    from scangen.experiments.table1 import paired_entries

    by_size = {int(r["size"]): {k: r[k] for k in r if k != "size"} for r in result["by_size"].iter_rows(named=True)}
    return {"fm": fm, "fm_chosen_by": how, "seeds": list(seeds), "scanners": result["scanners"],
            "baseline": result["baseline"], "n_subsets": result["n_subsets"],
            "n_subsets_possible": result["n_subsets_possible"], "gain_by_size": by_size,
            "paired_by_size": {int(k): v for k, v in paired_entries(result["paired_by_size"], "size").items()},
            "size_contrasts": result["size_contrasts"].to_dicts(),
            "best_worst": result["best_worst"], "chance": chance_summary(result["chance"]),
            "chance_tables": {side: t.to_dicts() for side, t in result["chance"].items()}}
