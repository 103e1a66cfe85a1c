"""Paired comparison of two arms (baseline, ScanGen) on the same test specimens, pooled over seeds.

A *pair* is one baseline run and one ScanGen run that differ only in the ScanGen switch (same training
seed, same split): both predict the same held-out specimens. For a metric `M` the change is
`delta = mean_pairs (M(ScanGen run) - M(baseline run))`. Its interval comes from a specimen-level
bootstrap: one resample draws the test specimens with replacement (a vector of multiplicities `w`, all
scans of a drawn specimen kept) and applies the SAME draw to both arms of every pair that shares that
split, recomputes each arm's metric on it, and averages the per-pair differences over pairs. Pairs with
different splits (split seeds) get independent draws of their own specimens. The interval is the
percentile interval of the resampled `delta` (level `level`, default 95%).

Metrics on the 40x test WSIs of the multiscanner cohort (`evaluation_rows`), with per-specimen values
`cov_s = sd_s / max(|mean_s|, eps)` (population sd of the logits over scans) and multiplicities w_s:
- `scanner_cov`:   sum_s w_s cov_s / sum_s w_s                        (the paper's CoV)
- `median_cov`:    median of the multiset {cov_s repeated w_s times}   (its robust form)
- `within_sd`:     sum_s w_s sd_s / sum_s w_s                         (scanner disagreement in logits)
- `scanner_share`: within_sd / between_sd, between_sd = weighted population sd of the mean_s
- `flip_rate`:     weighted share of specimens whose class (logit >= threshold) differs across scans;
                   the threshold is Youden's on the run's own validation WSIs, never resampled
- `auc`:           Mann-Whitney AUC over scans, each scan weighted by its specimen's multiplicity;
- `mag_cov`:       weighted mean over specimens of the CoV of the GT450 40x/20x pair (NaN when the
                   split has no 20x scans).
A resample in which some pair's AUC is undefined (one class drawn) is dropped for `auc` and counted.
`verdict` reads an interval: "lower" / "higher" when it excludes zero, "inconclusive" when it spans it.

`count_reference` gives the chance distribution of the ablation's best/worst subset counts (how often a
scanner, or a scanner pair, lands in the best or worst `top_k` subsets of each size) when the subset
ranking carries no information: within each size, the ranking is a uniformly random permutation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl

from scangen.metrics.classification import _weighted_auc, youden_threshold
from scangen.metrics.cov import magnification_cov_per_specimen
from scangen.metrics.summary import evaluation_rows

PAIRED_METRICS: tuple[str, ...] = ("scanner_cov", "median_cov", "within_sd", "scanner_share", "flip_rate", "auc",
                                   "mag_cov")
"""Metrics `paired_bootstrap` reports, in table order."""


@dataclass(frozen=True)
class RunEval:
    """What one run's paired metrics need, per test specimen (sorted ids) and per scan.

    specimens (n,), mean / sd / cov (n,) float64 of the logits over each specimen's scans, flip (n,)
    float64 0/1, y / score (m,) labels and logits of the scans, scan_spec (m,) int64 index of each
    scan's specimen, threshold (the flip-rate threshold used), mag_cov (n,) the per-specimen
    magnification CoV (all NaN without 20x scans)."""

    specimens: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    cov: np.ndarray
    flip: np.ndarray
    y: np.ndarray
    score: np.ndarray
    scan_spec: np.ndarray
    threshold: float
    mag_cov: np.ndarray | None = None


def run_eval(pred: pl.DataFrame, *, split: str = "test", val_split: str = "val", value: str = "logit",
             eps: float = 1e-6, threshold: float | None = None) -> RunEval:
    """Per-specimen summary of one run's predictions (40x multiscanner WSIs of `split`).

    The flip threshold is Youden's on the 40x WSIs of `val_split` unless `threshold` is given; test
    labels never enter it. Raises ValueError naming the column or split that is missing or too small.
    """
    for col in ("specimen_id", "egfr", value, "cohort", "split", "magnification"):
        if col not in pred.columns:
            raise ValueError(f"predictions: missing column {col!r}")
    rows = evaluation_rows(pred, split)
    if rows.height == 0:
        raise ValueError(f"predictions: no 40x multiscanner rows in split {split!r}")
    if threshold is None:
        val = evaluation_rows(pred, val_split)
        if val.height == 0:
            raise ValueError(f"predictions: no 40x multiscanner rows in split {val_split!r} for the flip threshold")
        threshold = youden_threshold(val["egfr"].to_numpy(), val[value].to_numpy())
    score = rows[value].to_numpy().astype(np.float64)
    if not np.all(np.isfinite(score)):
        raise ValueError(f"predictions: column {value!r} holds non-finite values in split {split!r}")
    ids, inv, counts = np.unique(rows["specimen_id"].to_numpy().astype(str), return_inverse=True, return_counts=True)
    if np.any(counts < 2):
        raise ValueError(f"predictions: specimens {ids[counts < 2][:5].tolist()} have a single 40x scan in split "
                         f"{split!r}; a scanner metric needs at least two")
    mean = np.bincount(inv, weights=score) / counts
    sd = np.sqrt(np.bincount(inv, weights=(score - mean[inv]) ** 2) / counts)
    pos = np.bincount(inv, weights=(score >= threshold).astype(np.float64))
    mag = np.full(ids.size, np.nan)
    all_mags = evaluation_rows(pred, split, magnification=None)
    if (all_mags["magnification"] == 20).any():
        table = magnification_cov_per_specimen(all_mags, eps=eps, value=value)
        where = {s: i for i, s in enumerate(ids.tolist())}
        for sid, c in zip(table["specimen_id"].to_list(), table["cov"].to_list()):
            if sid in where:
                mag[where[sid]] = c
    return RunEval(specimens=ids, mean=mean, sd=sd, cov=sd / np.maximum(np.abs(mean), eps),
                   flip=((pos > 0) & (pos < counts)).astype(np.float64),
                   y=rows["egfr"].to_numpy().astype(np.float64), score=score, scan_spec=inv.astype(np.int64),
                   threshold=float(threshold), mag_cov=mag)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of the multiset {values[j] repeated weights[r, j] times} for each row r.

    values (n,), weights (R, n) non-negative integers -> (R,). An even total takes the mean of the two
    middle elements, exactly as `np.median` of the expanded sample."""
    order = np.argsort(values, kind="mergesort")
    v, cum = values[order], np.cumsum(weights[:, order], axis=1)
    total = cum[:, -1]
    lo_rank = (total + 1) // 2  # 1-based ranks of the middle element(s)
    hi_rank = total // 2 + 1
    lo = np.argmax(cum >= lo_rank[:, None], axis=1)
    hi = np.argmax(cum >= hi_rank[:, None], axis=1)
    return 0.5 * (v[lo] + v[hi])


def metric_values(ev: RunEval, metric: str, weights: np.ndarray) -> np.ndarray:
    """`metric` of run `ev` under specimen multiplicities `weights` (R, n) -> (R,); see module docstring."""
    total = weights.sum(axis=1)
    if metric == "scanner_cov":
        return weights @ ev.cov / total
    if metric == "median_cov":
        return weighted_median(ev.cov, weights)
    if metric == "flip_rate":
        return weights @ ev.flip / total
    within = weights @ ev.sd / total
    if metric == "within_sd":
        return within
    if metric == "scanner_share":
        centre = weights @ ev.mean / total
        between = np.sqrt(np.maximum(weights @ (ev.mean ** 2) / total - centre ** 2, 0.0))
        return within / np.maximum(between, 1e-12)
    if metric == "auc":
        return _weighted_auc(ev.y, ev.score, weights[:, ev.scan_spec])
    if metric == "mag_cov":
        mag = ev.mag_cov if ev.mag_cov is not None else np.full(ev.specimens.size, np.nan)
        return weights @ mag / total
    raise ValueError(f"metric: expected one of {PAIRED_METRICS}, got {metric!r}")


def verdict(low: float, high: float) -> str:
    """"lower" / "higher" when the interval of a change excludes 0, "inconclusive" when it spans 0
    (or is undefined)."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0.0 <= high:
        return "inconclusive"
    return "lower" if high < 0.0 else "higher"


def _multiplicities(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) counts of n items drawn n times with replacement, one row per resample."""
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + draws).reshape(-1)
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def paired_bootstrap(pairs: Sequence[tuple[RunEval, RunEval]], metrics: Sequence[str] = PAIRED_METRICS, *,
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     return_samples: bool = False) -> pl.DataFrame | tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Paired specimen-bootstrap of the change (second arm - first arm) pooled over `pairs`.

    Each pair is (baseline, ScanGen) of one seed and split; both arms must hold the same test
    specimens. Returns one row per metric: metric, baseline and scangen (mean over pairs of each arm's
    estimate), diff (their difference), diff_lo / diff_hi (percentile interval at `level`), level,
    n_pairs, n_specimens (distinct test specimens over all splits), n_boot, n_skipped (resamples
    dropped because an AUC had one class) and verdict (see `verdict`).
    """
    if not pairs:
        raise ValueError("pairs: expected at least one (baseline, scangen) pair, got none")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive integer, got {n_boot}")
    unknown = [m for m in metrics if m not in PAIRED_METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; expected some of {PAIRED_METRICS}")
    for i, (a, b) in enumerate(pairs):
        if not np.array_equal(a.specimens, b.specimens):
            raise ValueError(f"pairs[{i}]: the two arms hold different test specimens; pair runs of the same split")
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str, ...], np.ndarray] = {}
    for a, _ in pairs:  # one draw per distinct test specimen set, shared by every pair on it
        key = tuple(a.specimens.tolist())
        if key not in draws:
            draws[key] = _multiplicities(rng, n_boot, a.specimens.size)
    rows, samples = [], {}
    for m in metrics:
        point_a, point_b, boot = [], [], []
        for a, b in pairs:
            ones = np.ones((1, a.specimens.size))
            w = draws[tuple(a.specimens.tolist())]
            point_a.append(float(metric_values(a, m, ones)[0]))
            point_b.append(float(metric_values(b, m, ones)[0]))
            boot.append(metric_values(b, m, w) - metric_values(a, m, w))
        diffs = np.mean(np.stack(boot), axis=0)
        samples[m] = diffs
        ok = np.isfinite(diffs)
        tail = (1.0 - level) / 2.0
        lo, hi = (np.quantile(diffs[ok], [tail, 1.0 - tail]) if ok.sum() >= n_boot / 2 else (np.nan, np.nan))
        base, new = float(np.mean(point_a)), float(np.mean(point_b))
        rows.append({"metric": m, "baseline": base, "scangen": new, "diff": new - base, "diff_lo": float(lo),
                     "diff_hi": float(hi), "level": level, "n_pairs": len(pairs),
                     "n_specimens": int(sum(len(k) for k in draws)), "n_boot": n_boot,
                     "n_skipped": int((~ok).sum()), "verdict": verdict(float(lo), float(hi))})
    table = pl.DataFrame(rows)
    return (table, samples) if return_samples else table


def paired_from_predictions(pairs: Sequence[tuple[pl.DataFrame, pl.DataFrame]], metrics: Sequence[str] = PAIRED_METRICS,
                            *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pl.DataFrame:
    """`paired_bootstrap` on (baseline, ScanGen) predictions tables (see `run_eval`)."""
    return paired_bootstrap([(run_eval(a), run_eval(b)) for a, b in pairs], metrics, n_boot=n_boot, level=level,
                            seed=seed)


# --- chance reference for the ablation's best / worst subset counts -----------------------------------

@dataclass(frozen=True)
class CountReference:
    """Counts under random subset rankings: `samples` (n_perm, len(items)) for `items` (scanner codes,
    then scanner pairs "A+B"), for one side (best or worst; both sides share this distribution)."""

    items: tuple[str, ...]
    samples: np.ndarray
    level: float

    def table(self, observed: dict[str, int]) -> pl.DataFrame:
        """Per item: observed count, chance mean, chance upper quantile at `level`, one-sided p-value
        P(chance count >= observed), and whether the observed count exceeds the upper quantile.
        `max_upper` is the same quantile of the largest scanner count in a ranking, the reference for
        "does ANY scanner's count exceed chance" (six scanners looked at together)."""
        obs = np.array([int(observed.get(i, 0)) for i in self.items])
        upper = np.quantile(self.samples, self.level, axis=0, method="higher")
        pval = (self.samples >= obs[None, :]).mean(axis=0)
        is_scanner = np.array(["+" not in i for i in self.items])
        max_upper = float(np.quantile(self.samples[:, is_scanner].max(axis=1), self.level, method="higher"))
        return pl.DataFrame({"item": list(self.items), "kind": np.where(is_scanner, "scanner", "pair").tolist(),
                             "observed": obs, "chance_mean": self.samples.mean(axis=0), "chance_upper": upper,
                             "p_value": pval, "exceeds": obs > upper,
                             "max_upper": np.where(is_scanner, max_upper, np.nan)})


def count_reference(subsets: Sequence[Sequence[str]], count_sizes: Sequence[int], top_k: int = 1, *,
                    n_perm: int = 20000, level: float = 0.95, seed: int = 0) -> CountReference:
    """Permutation reference of best/worst counts: per permutation and size k in `count_sizes`, `top_k`
    of the size-k subsets in `subsets` are drawn uniformly without replacement (a random ranking's top),
    and each scanner / pair is counted over the drawn subsets of all sizes. Sizes without subsets are
    skipped, as `ablation.best_worst` does."""
    if top_k < 1 or n_perm < 1:
        raise ValueError(f"top_k and n_perm: expected positive integers, got {top_k} and {n_perm}")
    subsets = [tuple(s) for s in subsets]
    scanners = sorted({c for s in subsets for c in s})
    pairs = sorted({"+".join(p) for s in subsets for p in combinations(s, 2)})
    items = tuple(scanners + pairs)
    index = {name: j for j, name in enumerate(items)}
    rng = np.random.default_rng(seed)
    samples = np.zeros((n_perm, len(items)), dtype=np.int64)
    for k in count_sizes:
        members = [s for s in subsets if len(s) == k]
        if not members:
            continue
        incidence = np.zeros((len(members), len(items)), dtype=np.int64)
        for r, s in enumerate(members):
            incidence[r, [index[c] for c in s]] = 1
            incidence[r, [index["+".join(p)] for p in combinations(s, 2)]] = 1
        n = min(top_k, len(members))
        chosen = np.argsort(rng.random((n_perm, len(members))), axis=1)[:, :n]  # uniform n-subsets
        samples += incidence[chosen].sum(axis=1)
    return CountReference(items, samples, level)
