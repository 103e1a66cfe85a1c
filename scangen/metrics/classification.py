"""EGFR classification metrics: ROC AUC, specimen-bootstrap confidence intervals, a specimen-level
permutation test of the AUC, Youden threshold and the cross-scanner flip rate.

The AUC is the Mann-Whitney statistic (ties count one half). Bootstrap resamples *specimens* with
replacement and keeps all WSIs of a drawn specimen, so scans of one specimen never count as
independent evidence. It is vectorised: one resample is a vector of specimen multiplicities, and a
weighted AUC is computed for all resamples at once from a single sort of the scores.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _check_binary(y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels as float64 0/1, scores as float64) arrays of equal length."""
    yy = np.asarray(y).reshape(-1)
    ss = np.asarray(score, dtype=np.float64).reshape(-1)
    if yy.shape[0] != ss.shape[0]:
        raise ValueError(f"y and score: expected equal lengths, got {yy.shape[0]} and {ss.shape[0]}")
    if not np.isin(yy, (0, 1)).all():
        raise ValueError(f"y: expected labels 0/1, got values {np.unique(yy)[:10].tolist()}")
    if not np.all(np.isfinite(ss)):
        raise ValueError("score: expected finite numbers")
    return yy.astype(np.float64), ss


def _weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each row of `weights` (R, n) over samples (y, score); NaN where a class has no weight.

    Sort once; for each positive, count the negative weight strictly below plus half the negative
    weight tied with it. Shapes: y, score (n,), weights (R, n) -> (R,).
    """
    order = np.argsort(score, kind="mergesort")
    s, yy, w = score[order], y[order], weights[:, order]
    # tie groups of equal scores
    new_group = np.empty(s.shape[0], dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] != s[:-1]
    starts = np.flatnonzero(new_group)
    neg_per_group = np.add.reduceat(w * (1.0 - yy), starts, axis=1)
    pos_per_group = np.add.reduceat(w * yy, starts, axis=1)
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    num = (pos_per_group * (neg_below + 0.5 * neg_per_group)).sum(axis=1)
    den = pos_per_group.sum(axis=1) * neg_per_group.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def roc_auc(y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """ROC AUC of scores for binary labels; raises ValueError unless both classes are present."""
    yy, ss = _check_binary(y, score)
    if yy.min() == yy.max():
        raise ValueError(f"y: AUC needs both classes, all {yy.shape[0]} labels are {int(yy[0]) if yy.size else 'absent'}")
    return float(_weighted_auc(yy, ss, np.ones((1, yy.shape[0])))[0])


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate and percentile interval from a specimen bootstrap.

    `n_skipped` counts resamples that drew a single class (no AUC); they are reported, not hidden.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_skipped: int


def bootstrap_auc(
    y: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """AUC with a percentile CI from resampling `groups` (specimens) with replacement.

    Deterministic for a given `seed`. When fewer than half the resamples hold both classes (a
    cohort too small for a meaningful interval) the bounds are NaN; `n_skipped` says how many.
    """
    yy, ss = _check_binary(y, score)
    g = np.asarray(groups).astype(str).reshape(-1)
    if g.shape[0] != yy.shape[0]:
        raise ValueError(f"groups: expected {yy.shape[0]} entries, got {g.shape[0]}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive integer, got {n_boot}")
    estimate = roc_auc(yy, ss)
    ids, inverse = np.unique(g, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(n_boot, ids.size))
    flat = (np.arange(n_boot)[:, None] * ids.size + draws).reshape(-1)
    mult = np.bincount(flat, minlength=n_boot * ids.size).reshape(n_boot, ids.size).astype(np.float64)
    aucs = _weighted_auc(yy, ss, mult[:, inverse])
    ok = np.isfinite(aucs)
    n_skipped = int((~ok).sum())
    if ok.sum() < n_boot / 2:
        return BootstrapCI(estimate, float("nan"), float("nan"), level, n_boot, n_skipped)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(aucs[ok], [tail, 1.0 - tail])
    return BootstrapCI(estimate, float(low), float(high), level, n_boot, n_skipped)


def _specimen_labels(yy: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each scan's specimen, one 0/1 label per specimen); raises if a specimen's scans disagree."""
    ids, inverse = np.unique(g, return_inverse=True)
    pos = np.bincount(inverse, weights=yy, minlength=ids.size)
    n = np.bincount(inverse, minlength=ids.size)
    mixed = ids[(pos > 0) & (pos < n)]
    if mixed.size:
        raise ValueError(f"y: a specimen has one task label, specimens {mixed[:5].tolist()} have both")
    return inverse, (pos > 0).astype(np.float64)


def _label_assignments(labels: np.ndarray, max_assignments: int, seed: int) -> tuple[np.ndarray, bool]:
    """Specimen label vectors to test, (R, n_specimens), and whether they enumerate all C(n, k).

    All C(n, k) ways to choose the k positive specimens when there are at most `max_assignments`,
    else `max_assignments` seeded random permutations of `labels`.
    """
    n, k = labels.size, int(labels.sum())
    if math.comb(n, k) <= max_assignments:
        out = np.zeros((math.comb(n, k), n))
        for r, chosen in enumerate(itertools.combinations(range(n), k)):
            out[r, list(chosen)] = 1.0
        return out, True
    rng = np.random.default_rng(seed)
    return np.stack([labels[rng.permutation(n)] for _ in range(max_assignments)]), False


def specimen_permutation_pvalue(
    y: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    specimen: Sequence[str] | np.ndarray,
    max_assignments: int = 2000,
    seed: int = 0,
) -> float:
    """One-sided p-value of the scan-level AUC under permutation of EGFR labels among specimens.

    Scans of one specimen are not independent, so labels are exchanged between *specimens*: every
    scan keeps its specimen's (permuted) label and the AUC over all scans is recomputed. With n
    specimens of which k are positive, all C(n, k) assignments are enumerated when there are at
    most `max_assignments` (p = share with AUC >= observed; the observed assignment is one of
    them); otherwise `max_assignments` permutations seeded by `seed` are drawn and
    p = (1 + #{AUC >= observed}) / (max_assignments + 1). The smallest attainable p is therefore
    1 / C(n, k) or 1 / (max_assignments + 1). AUC uses mid-ranks (ties count one half).
    """
    yy, ss = _check_binary(y, scores)
    g = np.asarray(specimen).astype(str).reshape(-1)
    if g.shape[0] != yy.shape[0]:
        raise ValueError(f"specimen: expected {yy.shape[0]} entries, got {g.shape[0]}")
    if int(max_assignments) < 1:
        raise ValueError(f"max_assignments: expected a positive integer, got {max_assignments}")
    inverse, labels = _specimen_labels(yy, g)
    if labels.min() == labels.max():
        raise ValueError("y: a permutation test needs specimens of both classes")
    assignments, exact = _label_assignments(labels, int(max_assignments), seed)
    ranks = _midranks(ss)
    scan_labels = np.vstack([labels[None, :], assignments])[:, inverse]  # (1 + R, n_scans)
    n1 = scan_labels.sum(axis=1)
    n0 = scan_labels.shape[1] - n1
    aucs = (scan_labels @ ranks - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    observed, rest = aucs[0], aucs[1:]
    hits = int(np.sum(rest >= observed - 1e-12))
    return hits / rest.size if exact else (1 + hits) / (rest.size + 1)


def _midranks(score: np.ndarray) -> np.ndarray:
    """1-based ranks of `score` with tied values sharing their mean rank."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return ((upper - counts + 1 + upper) / 2.0)[inverse]


def youden_threshold(y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Score threshold maximising TPR - FPR (predict positive when score >= threshold).

    Candidates are the observed scores; among equal optima the lowest threshold wins, so the
    result is deterministic.
    """
    yy, ss = _check_binary(y, score)
    if yy.min() == yy.max():
        raise ValueError("y: a Youden threshold needs both classes")
    cand = np.unique(ss)
    pos = ss[yy == 1]
    neg = ss[yy == 0]
    tpr = (pos[None, :] >= cand[:, None]).mean(axis=1)
    fpr = (neg[None, :] >= cand[:, None]).mean(axis=1)
    return float(cand[int(np.argmax(tpr - fpr))])


def flip_rate(
    score: Sequence[float] | np.ndarray, specimen: Sequence[str] | np.ndarray, threshold: float
) -> float:
    """Share of specimens whose predicted class (score >= threshold) is not the same on all scans."""
    ss = np.asarray(score, dtype=np.float64).reshape(-1)
    g = np.asarray(specimen).astype(str).reshape(-1)
    if ss.shape[0] != g.shape[0]:
        raise ValueError(f"score and specimen: expected equal lengths, got {ss.shape[0]} and {g.shape[0]}")
    if ss.shape[0] == 0:
        raise ValueError("score: expected at least one scan, got none")
    _, inverse = np.unique(g, return_inverse=True)
    pos = (ss >= threshold).astype(np.float64)
    n = np.bincount(inverse)
    k = np.bincount(inverse, weights=pos)
    return float(np.mean((k > 0) & (k < n)))


def per_group_auc(
    y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, group: Sequence[str] | np.ndarray
) -> dict[str, float]:
    """AUC within each group (e.g. scanner); NaN for a group holding a single class."""
    yy, ss = _check_binary(y, score)
    g = np.asarray(group).astype(str).reshape(-1)
    if g.shape[0] != yy.shape[0]:
        raise ValueError(f"group: expected {yy.shape[0]} entries, got {g.shape[0]}")
    out: dict[str, float] = {}
    for name in sorted(set(g.tolist())):
        sel = g == name
        ys = yy[sel]
        out[name] = roc_auc(ys, ss[sel]) if ys.min() != ys.max() else float("nan")
    return out
