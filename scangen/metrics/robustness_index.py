"""Robustness index (RI) of an embedding space to scanners, after PathoROB.

Source: PathoROB (bifold-pathomics, arXiv:2507.17845) and its re-implementation in the `croma`
package (``croma.RI``, evaluation design "all"). For every query embedding take its k nearest
neighbours by cosine distance, never counting neighbours from the query's own specimen (the
"group"), and classify each neighbour against the query:

    SO = same biological label, other scanner     (evidence for biology)
    OS = other biological label, same scanner     (evidence for the scanner)

    RI(k) = sum_i SO_i(k) / (sum_i SO_i(k) + sum_i OS_i(k))            (pooled over queries)

RI is 1 when neighbours follow biology across scanners and 0 when they follow the scanner.
``k`` is chosen as PathoROB does: the candidate maximising the balanced accuracy of a kNN
majority vote for the biological label (same neighbours, same exclusion); ties keep the
earlier candidate, and vote ties go to the label seen first in the input.

Everything here takes plain arrays, so it runs equally on raw FM embeddings, on mean embeddings
per WSI, and on the output of a trained projection phi.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score


def pathorob_k_candidates(max_k: int = 101) -> tuple[int, ...]:
    """PathoROB's candidate neighbourhood sizes: 1, 3, 5, 7, 9, then 11, 21, ... below `max_k`."""
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    ks = [k for k in (1, 3, 5, 7, 9) if k <= max_k] + list(range(11, max_k, 10))
    return tuple(ks)


DEFAULT_K_CANDIDATES: tuple[int, ...] = pathorob_k_candidates(101)


def metric_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present (or the device asked for), CPU otherwise."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def encode_labels(values: Sequence | np.ndarray, name: str) -> np.ndarray:
    """Integer codes in order of first appearance (like ``pandas.factorize``); rejects missing."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} has {int(np.isnan(arr).sum())} missing (NaN) values")
    if arr.dtype == object and any(v is None for v in arr):
        raise ValueError(f"{name} has missing (None) values")
    _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int64)


def check_features(features: np.ndarray, n_expected: int | None = None) -> np.ndarray:
    """Validate an (n, D) embedding array (finite, non-zero rows); return it as float32."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (n, D) array, got shape {x.shape}")
    if n_expected is not None and x.shape[0] != n_expected:
        raise ValueError(f"features has {x.shape[0]} rows but the labels have {n_expected}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    zero = np.flatnonzero(np.linalg.norm(x, axis=1) == 0)
    if zero.size:
        raise ValueError(f"features rows {zero[:5].tolist()} are all zeros: cosine is undefined")
    return x


def cosine_topk(
    features: np.ndarray,
    kmax: int,
    exclude_group: np.ndarray | None = None,
    device: str | torch.device | None = None,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """The `kmax` most cosine-similar rows of every row, self and same-group rows excluded.

    Shapes: features (n, D); returns indices (n, kmax) int64 with -1 where fewer than `kmax`
    eligible neighbours exist, and similarities (n, kmax) float32 (-inf in those slots), best
    first. Similarities are computed chunk by chunk on `device` (CUDA when present).
    """
    dev = metric_device(device)
    n = features.shape[0]
    kmax = int(min(kmax, n - 1))
    if kmax < 1:
        raise ValueError(f"need at least two rows to find neighbours, got {n}")
    x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32, device=dev)
    x = torch.nn.functional.normalize(x, dim=1)
    groups = None if exclude_group is None else torch.as_tensor(exclude_group, device=dev)
    idx_out = np.empty((n, kmax), dtype=np.int64)
    sim_out = np.empty((n, kmax), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sim = x[start:stop] @ x.T
        rows = torch.arange(stop - start, device=dev)
        sim[rows, rows + start] = -torch.inf
        if groups is not None:
            sim.masked_fill_(groups[start:stop, None] == groups[None, :], -torch.inf)
        val, idx = torch.topk(sim, kmax, dim=1, largest=True, sorted=True)
        idx[torch.isinf(val)] = -1
        idx_out[start:stop] = idx.cpu().numpy()
        sim_out[start:stop] = val.cpu().numpy()
    return idx_out, sim_out


def knn_balanced_accuracy(
    labels: np.ndarray, neigh: np.ndarray, k_values: Sequence[int]
) -> dict[int, float]:
    """Balanced accuracy of a k-nearest-neighbour majority vote, for each k in `k_values`.

    `labels` are integer codes (n,), `neigh` the (n, kmax) neighbour table of `cosine_topk`
    (-1 = no neighbour). Queries without any neighbour are left out; ties go to the smallest code.
    """
    n_labels = int(labels.max()) + 1
    valid = neigh >= 0
    onehot = np.zeros((neigh.shape[0], neigh.shape[1], n_labels), dtype=np.int32)
    rows, cols = np.nonzero(valid)
    onehot[rows, cols, labels[neigh[rows, cols]]] = 1
    votes = np.cumsum(onehot, axis=1)
    out: dict[int, float] = {}
    for k in k_values:
        kk = min(int(k), neigh.shape[1])
        used = valid[:, 0]
        if not used.any():
            continue
        pred = votes[:, kk - 1].argmax(axis=1)
        out[int(k)] = float(balanced_accuracy_score(labels[used], pred[used]))
    if not out:
        raise ValueError("no query has any neighbour outside its own specimen")
    return out


def check_degenerate(lab: np.ndarray, sc: np.ndarray, grp: np.ndarray, labels: Sequence | np.ndarray) -> None:
    """The RI is undefined with one biological class (no OS neighbour can exist: RI would be 1 by
    construction), one scanner (no SO neighbour: 0 by construction) or one specimen (every neighbour
    is excluded): each raises naming what is missing."""
    if lab.size and lab.max() == 0:
        value = np.asarray(labels)[0].item()
        raise ValueError(
            f"robustness index: the biological label has a single class ({value!r} for all {lab.size} rows); "
            f"it needs at least two classes (otherwise it is 1.0 by construction)"
        )
    if sc.size and sc.max() == 0:
        raise ValueError(f"robustness index: all {sc.size} rows come from one scanner; it needs at least two scanners")
    if grp.size and grp.max() == 0:
        raise ValueError(
            f"robustness index: all {grp.size} rows come from one specimen; it needs at least two specimens "
            f"(neighbours from the query's own specimen never count)"
        )


@dataclass(frozen=True)
class NeighbourCounts:
    """Pooled neighbour type counts at each k (arrays aligned with `k`)."""

    k: np.ndarray
    so: np.ndarray
    os: np.ndarray
    support: np.ndarray
    """Fraction of queries with at least one SO or OS neighbour within k."""


def neighbour_counts(
    labels: np.ndarray, scanners: np.ndarray, neigh: np.ndarray, k_values: Sequence[int]
) -> NeighbourCounts:
    """Count SO/OS neighbours among the first k of `neigh`, pooled over queries (the RI's terms)."""
    valid = neigh >= 0
    safe = np.where(valid, neigh, 0)
    same_label = labels[safe] == labels[:, None]
    same_scanner = scanners[safe] == scanners[:, None]
    kinds = {
        "so": valid & same_label & ~same_scanner,
        "os": valid & ~same_label & same_scanner,
    }
    cum = {name: np.cumsum(mask, axis=1) for name, mask in kinds.items()}
    ks = np.asarray([min(int(k), neigh.shape[1]) for k in k_values], dtype=np.int64)
    totals = {name: c[:, ks - 1].sum(axis=0) for name, c in cum.items()}
    informative = (cum["so"][:, ks - 1] + cum["os"][:, ks - 1]) > 0
    return NeighbourCounts(
        k=np.asarray(list(k_values), dtype=np.int64),
        so=totals["so"],
        os=totals["os"],
        support=informative.mean(axis=0),
    )


@dataclass(frozen=True)
class RobustnessIndexResult:
    """RI at the operating k, plus the whole curve and the k-selection scores."""

    value: float
    k: int
    k_selected_by: str
    n_samples: int
    so: int
    os: int
    support: float
    curve: dict[int, float] = field(default_factory=dict)
    knn_balanced_accuracy: dict[int, float] = field(default_factory=dict)


def robustness_index(
    features: np.ndarray,
    labels: Sequence | np.ndarray,
    scanners: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    k: int | None = None,
    k_candidates: Sequence[int] = DEFAULT_K_CANDIDATES,
    device: str | torch.device | None = None,
) -> RobustnessIndexResult:
    """Robustness index of `features` (n, D) to `scanners`, given biological `labels`.

    `groups` (n,) is the independence unit (specimen id): neighbours from the query's own group
    never count. With `k=None` the operating k is the candidate maximising kNN balanced accuracy
    on `labels` (PathoROB); candidates >= n are dropped. RI is NaN when no SO/OS neighbour exists.
    """
    if labels is None:
        raise ValueError("robustness_index needs a biological label per row, got labels=None")
    lab = encode_labels(labels, "labels")
    n = lab.shape[0]
    x = check_features(features, n)
    sc = encode_labels(scanners, "scanners")
    grp = encode_labels(groups, "groups")
    if sc.shape[0] != n or grp.shape[0] != n:
        raise ValueError(
            f"labels ({n}), scanners ({sc.shape[0]}) and groups ({grp.shape[0]}) differ in length"
        )
    check_degenerate(lab, sc, grp, labels)
    if k is not None:
        if int(k) < 1 or int(k) >= n:
            raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
        candidates = [int(k)]
    else:
        candidates = sorted({int(c) for c in k_candidates if 1 <= int(c) < n})
        if not candidates:
            raise ValueError(f"no k candidate in {list(k_candidates)} is in [1, {n - 1}]")
    neigh, _ = cosine_topk(x, max(candidates), exclude_group=grp, device=device)
    bacc = knn_balanced_accuracy(lab, neigh, candidates)
    if k is None:
        chosen = max(candidates, key=lambda c: (bacc.get(c, -1.0), -c))
        selected_by = "knn_balanced_accuracy"
    else:
        chosen, selected_by = int(k), "given"
    counts = neighbour_counts(lab, sc, neigh, candidates)
    denom = counts.so + counts.os
    ri = np.where(denom > 0, counts.so / np.maximum(denom, 1), np.nan)
    curve = {int(c): float(v) for c, v in zip(candidates, ri)}
    at = candidates.index(chosen)
    return RobustnessIndexResult(
        value=curve[chosen],
        k=chosen,
        k_selected_by=selected_by,
        n_samples=n,
        so=int(counts.so[at]),
        os=int(counts.os[at]),
        support=float(counts.support[at]),
        curve=curve,
        knn_balanced_accuracy=bacc,
    )
