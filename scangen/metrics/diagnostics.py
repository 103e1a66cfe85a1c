"""Loss diagnostics of a trained model: pair distances, logit spreads and per-scanner embedding norms.

Pure numpy functions over items (rows of an embedding matrix) labelled by specimen and scanner:
- `pair_distance_means`: mean cosine distance d = 1 - cos over the two pair kinds of the ScanGen
  loss, positive pairs (same specimen, different scanners) and negative pairs (same scanner,
  different specimens), i < j; pairs with the same specimen and scanner belong to neither kind.
- `logit_spread`: within-specimen SD (mean over specimens of the population SD of its logits across
  scans) and between-specimen SD (population SD over specimens of their mean logits), the numerator
  and denominator of the scanner share.
- `scanner_norms`: per scanner, the mean L2 norm of its items' embeddings (the signal a cosine
  distance cannot see).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scangen.metrics.scanner_variance import scanner_variance

COSINE_EPS = 1e-12
"""Floor of a vector norm in the cosine (a zero vector has cosine 0 with everything)."""


def _labels(values: Sequence | np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per item), got shape {arr.shape}")
    return arr


def _items(z: np.ndarray) -> np.ndarray:
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"z: expected an (n, H) matrix of item embeddings, got shape {arr.shape}")
    return arr


def cosine_distances(z: np.ndarray) -> np.ndarray:
    """(n, n) matrix of 1 - cos(z_i, z_j) for items z (n, H), in float64."""
    z = _items(z)
    unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), COSINE_EPS)
    return 1.0 - unit @ unit.T


def pair_distance_means(
    z: np.ndarray, specimen: Sequence | np.ndarray, scanner: Sequence | np.ndarray
) -> tuple[float, float]:
    """(mean d over positive pairs, mean d over negative pairs) of items z (n, H); NaN for a kind
    with no pair. Positive: same specimen, different scanners; negative: same scanner, different
    specimens (i < j)."""
    z = _items(z)
    n = z.shape[0]
    spec = _labels(specimen, n, "specimen")
    scan = _labels(scanner, n, "scanner")
    same_s = spec[:, None] == spec[None, :]
    same_c = scan[:, None] == scan[None, :]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    d = cosine_distances(z)
    pos, neg = upper & same_s & ~same_c, upper & same_c & ~same_s
    mean = lambda sel: float(d[sel].mean()) if sel.any() else float("nan")  # noqa: E731
    return mean(pos), mean(neg)


def logit_spread(logits: Sequence[float] | np.ndarray, specimen: Sequence | np.ndarray,
                 scanner: Sequence | np.ndarray) -> tuple[float, float]:
    """(within-specimen SD, between-specimen SD) of logits (n,) over specimens scanned several times."""
    values = np.asarray(logits, dtype=np.float64)
    spec = _labels(specimen, values.shape[0], "specimen")
    scan = _labels(scanner, values.shape[0], "scanner")
    v = scanner_variance(values, spec, scan)
    return float(v.within_sd), float(v.between_sd)


def scanner_norms(z: np.ndarray, scanner: Sequence | np.ndarray) -> dict[str, float]:
    """{scanner: mean L2 norm of its items} for items z (n, H), scanners in first-appearance order."""
    z = _items(z)
    scan = _labels(scanner, z.shape[0], "scanner")
    norms = np.linalg.norm(z, axis=1)
    return {str(c): float(norms[scan == c].mean()) for c in dict.fromkeys(scan.tolist())}
