"""CORAL (Sun, Feng & Saenko 2016): align each scanner's second moments to a reference scanner.

For scanner b with patch mean mu_b and covariance C_b over the fit patches (population moments),
and the reference scanner r:
    A_b = R_b^{-1/2} R_r^{1/2},     y = (x - mu_b) @ A_b + mu_r,
with R = (1 - s) C + s (tr C / D) I the shrunk covariance (symmetric matrix powers by eigh).
Then cov(y) = R_r and mean(y) = mu_r on scanner b's fit patches whenever R_b = C_b (s = 0), and
the reference scanner is left unchanged (A_r = I). Deviations from the paper, both stated: the
paper whitens the raw source features (its mean moves with A); we centre each scanner and move it
to the reference mean, so first and second moments both match. The paper regularises with "+ I"
on z-scored features; we shrink by Ledoit-Wolf (s = "auto", skada's CORALAdapter default) because
a scanner's fit patches may number only a few times D. Written by hand because skada's adapter
takes one source and one target array in memory; here each of several scanners maps to one
reference and the moments are streamed over patch bags.
Reference (a rule fixed before any result): the scanner label with the most fit slides (ties: first
in slide order), i.e. the scanner most of the task classifier's training data comes from.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from scangen.harmonise.maps import ScannerMaps
from scangen.harmonise.streaming import centred_second_moments, fit_scanners, scanner_means
from scangen.store.bags import _BagArrays


def ledoit_wolf_shrinkage(cov: np.ndarray, fourth: float, n: int) -> float:
    """Ledoit-Wolf shrinkage s in [0, 1] of a population covariance `cov` (D, D) of n centred rows.

    fourth = sum_i |x_i - mu|^4. Same estimator as sklearn.covariance.ledoit_wolf_shrinkage, from
    streamed sums: beta = (fourth / n - |C|_F^2) / (n D), delta = |C - mu I|_F^2 / D, s = min(beta, delta) / delta.
    """
    d = cov.shape[0]
    mu = np.trace(cov) / d
    frob = float(np.sum(cov * cov))
    delta = (frob - 2.0 * mu * np.trace(cov) + d * mu * mu) / d
    beta = (fourth / n - frob) / (n * d)
    if delta <= 0:
        return 0.0
    return float(min(max(beta, 0.0), delta) / delta)


def _power(sym: np.ndarray, p: float, what: str) -> np.ndarray:
    """sym^p for a symmetric positive-definite matrix, by eigendecomposition."""
    w, v = np.linalg.eigh(sym)
    if w.min() <= w.max() * 1e-12:
        raise ValueError(
            f"coral: covariance of {what} is singular (fewer fit patches than dimensions?); use shrinkage > 0"
        )
    return (v * w**p) @ v.T


def pick_reference(scanners: tuple[str, ...], codes: np.ndarray) -> str:
    """The scanner with the most fit slides (ties: first in slide order)."""
    counts = np.bincount(codes, minlength=len(scanners))
    return scanners[int(np.argmax(counts))]


def fit_coral(
    bags: _BagArrays,
    positions: np.ndarray,
    *,
    reference: str | None = None,
    shrinkage: float | Literal["auto"] = "auto",
) -> ScannerMaps:
    """Fit CORAL maps of every fit scanner onto `reference` (None: `pick_reference`); see module docstring.

    shrinkage: "auto" (Ledoit-Wolf per scanner) or a fixed s in [0, 1] (0: plain sample covariance).
    """
    if shrinkage != "auto" and not (isinstance(shrinkage, (int, float)) and 0.0 <= shrinkage <= 1.0):
        raise ValueError(f"coral: shrinkage must be 'auto' or a number in [0, 1], got {shrinkage!r}")
    scanners, codes = fit_scanners(bags.slides, positions)
    ref = pick_reference(scanners, codes) if reference is None else reference
    if ref not in scanners:
        raise ValueError(f"coral: reference scanner {ref!r} has no fit slides; fitted scanners: {list(scanners)}")
    r = scanners.index(ref)
    means, counts = scanner_means(bags, positions, codes, len(scanners))
    second, fourth = centred_second_moments(bags, positions, codes, means, full=True)
    d = bags.dim
    shrunk = second  # (S, D, D), shrunk in place scanner by scanner: no second D x D stack
    used = []
    for b in range(len(scanners)):
        shrunk[b] /= counts[b]
        s = ledoit_wolf_shrinkage(shrunk[b], fourth[b], int(counts[b])) if shrinkage == "auto" else float(shrinkage)
        level = s * np.trace(shrunk[b]) / d
        shrunk[b] *= 1.0 - s
        shrunk[b][np.diag_indices(d)] += level
        used.append(s)
    colour = _power(shrunk[r], 0.5, f"reference scanner {ref!r}")
    linear = shrunk  # each R_b is read once, then overwritten by A_b
    for b, name in enumerate(scanners):
        linear[b] = np.eye(d) if b == r else _power(shrunk[b], -0.5, f"scanner {name!r}") @ colour
    return ScannerMaps(
        method="coral",
        scanners=scanners,
        center=means,
        linear=linear,
        offset=np.repeat(means[r][None, :], len(scanners), axis=0),
        fit_slide_ids=tuple(bags.slides[positions]["slide_id"].to_list()),
        details={
            "reference": ref, "shrinkage": dict(zip(scanners, used)), "patches": dict(zip(scanners, counts.tolist())),
        },
    )
